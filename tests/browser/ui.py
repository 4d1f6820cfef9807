"""Driving the real ComfyUI web UI in headless Chromium (Playwright, sync API).

`launch_browser` starts Debian's `/usr/bin/chromium` (Playwright cannot download its own browser
here); `UiPage` wraps one tab: it records every failed request, console error and page error,
waits for the app, dismisses first-start dialogs, builds graphs through the UI's own LiteGraph
and clicks Run. `UiPage.markup` (`Markup` for 1.58, `LegacyMarkup` for 1.35.x) finds what a
person clicks where the two builds' markup differs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

CHROMIUM = os.environ.get("COMFYSERVE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}

# What ComfyUI 0.8 itself answers 404 on a fresh user directory (the UI treats each as "not
# there yet"; ../shared/reference/frontend/README.md), and the favicon 1.35.9 has no link for.
EXPECTED_404 = (
    "/user.css",
    "/api/userdata/user.css",
    "/api/userdata/comfy.templates.json",
    "/api/userdata?dir=workflows",
    "/api/userdata?dir=subgraphs",
    "/api/userdata/workflows%2F.index.json",  # 1.58.1 workflows sidebar: its index, not written yet
    "/favicon.ico",
)


def chromium_available() -> bool:
    return Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)


def launch_browser(playwright: Any) -> Any:
    """Chromium with a fresh profile each time (Playwright's launch uses a temp user-data-dir)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def new_profile_context(playwright: Any) -> tuple[Any, Path]:
    """A persistent context in a fresh user-data-dir (for tests that need one explicitly)."""
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    context = playwright.chromium.launch_persistent_context(
        str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, viewport=VIEWPORT
    )
    return context, profile


@dataclass
class Problem:
    kind: str  # "http" (status >= 400), "failed" (no answer), "console", "pageerror"
    text: str
    url: str = ""
    status: int = 0

    def __str__(self) -> str:
        where = f" {self.url}" if self.url else ""
        status = f" {self.status}" if self.status else ""
        return f"{self.kind}{status}{where}: {self.text[:300]}"


@dataclass
class Recorder:
    """Everything that went wrong in a page, split into the server's fault and the rest."""

    base: str  # the UI's URL ("http://host:port/" or, behind a proxy, "http://host:port/comfy/")
    problems: list[Problem] = field(default_factory=list)
    api_requests: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path?query, status)
    responses: list[tuple[str, str, int]] = field(default_factory=list)  # every own answer, the same way
    outside: list[str] = field(default_factory=list)  # own-origin URLs outside the UI's base path

    def own(self, url: str) -> bool:
        """A request for the server: under the UI's base URL. (Other URLs of the same origin
        are recorded in `outside`: the UI asked for something without its base path.)"""
        if url.startswith(self.base):
            return True
        parts, base = urlsplit(url), urlsplit(self.base)
        if parts.netloc == base.netloc and url not in self.outside:
            self.outside.append(url)
        return False

    def path(self, url: str) -> str:
        """The URL's path relative to the server's root (the proxy's prefix removed)."""
        parts = urlsplit(url)
        path = "/" + parts.path[len(urlsplit(self.base).path):]
        return path + (f"?{parts.query}" if parts.query else "")

    def expected(self, url: str, status: int = 404) -> bool:
        path = self.path(url)
        return status == 404 and any(path == e or path.startswith(e + "&") for e in EXPECTED_404)

    def attach(self, page: Any) -> None:
        page.on("response", self._on_response)
        page.on("requestfailed", self._on_failed)
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.problems.append(Problem("pageerror", str(error))))

    def _on_response(self, response: Any) -> None:
        url = response.url
        if not self.own(url):
            return
        path = self.path(url)
        self.responses.append((response.request.method, path, response.status))
        if "/api/" in path or path.startswith("/internal/"):
            self.api_requests.append((response.request.method, path, response.status))
        if response.status >= 400 and not self.expected(url, response.status):
            self.problems.append(Problem("http", response.status_text, url, response.status))

    def answered(self, method: str, path: str) -> bool:
        """Whether an own request `method path` (its query left out) has had an answer."""
        return any((m, p.split("?")[0]) == (method, path) for m, p, _ in self.responses)

    def _on_failed(self, request: Any) -> None:
        url, failure = request.url, request.failure or ""
        if not self.own(url):
            return  # api.comfy.org, huggingface.co: offline here, and not ours
        # The page drops some requests itself: fire-and-forget settings POSTs, stylesheets
        # that 404ed, requests of a page being reloaded.
        if failure == "net::ERR_ABORTED":
            return
        self.problems.append(Problem("failed", failure, url))

    def _on_console(self, message: Any) -> None:
        if message.type != "error":
            return
        text = message.text
        url = (message.location or {}).get("url", "")
        if text.startswith("Failed to load resource"):
            # The browser's line for a failed request: judged by the request itself above,
            # except for requests Playwright does not report (the favicon).
            if "net::ERR_NAME_NOT_RESOLVED" in text or "net::ERR_INTERNET_DISCONNECTED" in text:
                return
            if url and self.own(url) and not self.expected(url):
                self.problems.append(Problem("console", text, url))
            return
        self.problems.append(Problem("console", text, url))

    def server_problems(self) -> list[Problem]:
        """Problems the server caused: failed own requests, and console errors that are not
        about the offline internet (release notes, model downloads)."""
        offline = ("api.comfy.org", "huggingface.co", "ERR_NAME_NOT_RESOLVED", "ERR_INTERNET_DISCONNECTED")
        return [p for p in self.problems if not any(o in p.text or o in p.url for o in offline)]


# JavaScript run in the page. `window.app`, `window.LiteGraph` exist in both recorded versions.
# The modal layer of a dialog: PrimeVue's mask (1.35) or the newer dialog overlay (1.58).
DIALOG = '.p-dialog-mask, [data-testid="dialog-overlay"]'
DIALOG_CLOSE = ".p-dialog-mask button:has(.pi-times), .p-dialog-mask .p-dialog-close-button"
# A notification: PrimeVue's toast (1.35), the newer toaster's or the queue's banner ("Job
# queued", 1.58).
NOTIFICATION = '.p-toast-message, [data-testid="toast"], [data-testid="queue-notification-banner"]'
APP_READY = "() => !!(window.app && window.app.graph && window.app.canvas && window.LiteGraph)"

BUILD_GRAPH = """
(spec) => {
  const graph = new LiteGraph.LGraph();
  const made = {};
  let x = 50;
  for (const n of spec.nodes) {
    const node = LiteGraph.createNode(n.type);
    if (!node) throw new Error('no node type ' + n.type);
    node.id = n.id;
    graph.add(node);
    node.pos = n.pos || [x, 100];
    x += 340;
    for (const [name, value] of Object.entries(n.widgets || {})) {
      const widget = (node.widgets || []).find(w => w.name === name);
      if (!widget) throw new Error(n.type + ' has no widget ' + name);
      widget.value = value;
    }
    made[n.id] = node;
  }
  for (const n of spec.nodes) {
    for (const [input, [source, slot]] of Object.entries(n.links || {})) {
      const target = made[n.id];
      const index = target.findInputSlot(input);
      if (index < 0) throw new Error(n.type + ' has no input ' + input);
      made[source].connect(slot, target, index);
    }
  }
  // Without the nulls older builds' schema check rejects ("Invalid workflow against zod schema").
  return JSON.parse(JSON.stringify(graph.serialize(), (key, value) => value === null ? undefined : value));
}
"""


# Graph coordinates → the page's CSS pixels (the canvas may be drawn at another resolution).
GRAPH_TO_CLIENT = """
([x, y]) => {
  const c = window.app.canvas;
  const p = c.ds.convertOffsetToCanvas([x, y]);
  const r = c.canvas.getBoundingClientRect();
  const scale = c.canvas.width / r.width;
  return [r.left + p[0] / scale, r.top + p[1] / scale];
}
"""

DROP_FILE = """
async ([url, name, x, y]) => {
  const blob = await (await fetch(url)).blob();
  const transfer = new DataTransfer();
  transfer.items.add(new File([blob], name, {type: blob.type}));
  const target = document.elementFromPoint(x, y);
  for (const type of ['dragenter', 'dragover', 'drop']) {
    target.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: transfer,
                                              clientX: x, clientY: y}));
  }
}
"""


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())


class Markup:
    """Where the things a person clicks are in the current UI (1.58 and newer); `LegacyMarkup`
    has 1.35's. Only what differs between the builds lives here: what reads the same in both
    (the settings switches, the queue's buttons) the tests find by role and name."""

    def __init__(self, page: Any) -> None:
        self.page = page

    def sidebar_tab(self, tab: str) -> Any:
        """The sidebar's button of `tab` ("workflows", "node-library", …)."""
        return self.page.locator(f'[data-testid="{tab}-tab-button"]')

    def workflow_entry(self, name: str) -> Any:
        """The saved workflow `name` in the workflows sidebar (listed without ".json")."""
        return self.page.locator(f'[role=treeitem][aria-label="{name}"]')

    def library_labels(self, level: int) -> list[str]:
        """The labels the node library shows at tree depth `level` (1 = top categories)."""
        return self.page.evaluate(
            "(level) => [...document.querySelectorAll(`[role=treeitem][aria-level=\"${level}\"]`)]"
            ".map(e => e.textContent.trim())", level)

    def library_entry(self, label: str, level: int) -> Any:
        """The row of the category or node `label` at depth `level` of the node library."""
        exact = re.compile(rf"^\s*{re.escape(label)}\s*$")
        # `first`: the "Comfy nodes" section, above "Partner nodes" (API nodes) which may have
        # the same categories.
        return self.page.locator(f'[role=treeitem][aria-level="{level}"]').filter(has_text=exact).first

    def queue_idle(self) -> Any:
        """What the queue overlay's toggle says once no job is running or waiting."""
        return self.page.locator('[data-testid="queue-overlay-toggle"]', has_text="0 active")

    def outside_base_ok(self, path: str) -> bool:
        """Own-origin paths this build asks for without its base path (a UI bug no server can
        fix): its favicon and the frames of its "running" favicon."""
        return path == "/assets/favicon.ico" or path.startswith("/assets/images/favicon_progress_")


class LegacyMarkup(Markup):
    """1.35.x, ComfyUI 0.8's pin: sidebar buttons marked by class, PrimeVue trees whose rows
    carry their label in `aria-label` and nest their children (so a row is its content div)."""

    def sidebar_tab(self, tab: str) -> Any:
        return self.page.locator(f"button.{tab}-tab-button")

    def workflow_entry(self, name: str) -> Any:
        return self.page.locator(f'[role=treeitem][aria-label="{name}.json"] > [data-pc-section=nodecontent]')

    def library_labels(self, level: int) -> list[str]:
        return self.page.evaluate(
            "(level) => [...document.querySelectorAll(`[role=treeitem][aria-level=\"${level}\"]`)]"
            ".map(e => e.getAttribute('aria-label'))", level)

    def library_entry(self, label: str, level: int) -> Any:
        return self.page.locator(
            f'[role=treeitem][aria-level="{level}"][aria-label="{label}"] > [data-pc-section=nodecontent]')

    def queue_idle(self) -> Any:
        # The expanded queue's title: "N active jobs" while any runs or waits.
        return self.page.get_by_text("Job Queue", exact=True)

    def outside_base_ok(self, path: str) -> bool:
        # No <link rel=icon> until a job runs: the browser asks for the origin's /favicon.ico.
        return path == "/favicon.ico" or super().outside_base_ok(path)


def markup_for(version: str, page: Any) -> Markup:
    """1.35's markup for 1.35.x, the current one for anything newer."""
    return LegacyMarkup(page) if version_tuple(version) < (1, 36) else Markup(page)


class UiPage:
    """One browser tab on a comfyserve server."""

    def __init__(self, context: Any, url: str) -> None:
        self.context = context
        self.url = url.rstrip("/") + "/"
        self.page = context.new_page()
        self.recorder = Recorder(self.url)
        self.recorder.attach(self.page)
        self.markup = Markup(self.page)  # the build's own, once it has loaded
        self.sockets: list[Any] = []  # the page's websockets, newest last
        self.messages: list[dict] = []  # the JSON messages they received, in order
        self.page.on("websocket", self._on_websocket)

    def _on_websocket(self, socket: Any) -> None:
        self.sockets.append(socket)

        def received(payload: str | bytes) -> None:
            if isinstance(payload, str):  # (binary frames are previews)
                try:
                    self.messages.append(json.loads(payload))
                except ValueError:
                    self.messages.append({"type": None, "text": payload})

        socket.on("framereceived", received)

    # -- opening -------------------------------------------------------------------------

    def open(self, first_start: bool = False, timeout: float = 60_000) -> UiPage:
        """Open the UI and wait until it is usable. `first_start`: the user has no settings
        yet, so the templates browser is coming; wait for it and close it."""
        self.page.goto(self.url)
        self.wait_ready(first_start, timeout)
        return self

    def reload(self, timeout: float = 60_000) -> UiPage:
        self.page.reload()
        self.wait_ready(False, timeout)
        return self

    def wait_ready(self, first_start: bool = False, timeout: float = 60_000) -> None:
        self.page.wait_for_function(APP_READY, timeout=timeout)
        self.page.wait_for_selector('[data-testid="queue-button"]', timeout=timeout)
        self.markup = markup_for(self.version(), self.page)
        if first_start:
            self.page.wait_for_selector(DIALOG, state="visible", timeout=timeout)
        self.dismiss_dialogs()

    def dismiss_dialogs(self, timeout: float = 5_000) -> None:
        """Close open dialogs (the first-start templates browser) as a user would: Escape, or
        the × button of a dialog that does not have the focus (1.35.9's templates browser
        ignores Escape then); each time until that dialog is gone."""
        for attempt in range(6):
            shown = self.page.locator(DIALOG).filter(visible=True)
            if not shown.count():
                return
            try:
                dialog = shown.first.element_handle(timeout=timeout)
            except PlaywrightTimeout:
                continue  # it went by itself
            close = self.page.locator(DIALOG_CLOSE).filter(visible=True)
            focused = self.js("() => !!document.activeElement?.closest('.p-dialog-mask')")
            if close.count() and (not focused or attempt % 2 == 1):
                close.first.click()
            else:
                self.page.keyboard.press("Escape")
            try:
                dialog.wait_for_element_state("hidden", timeout=timeout)
            except PlaywrightTimeout:
                continue  # the other way next
        raise AssertionError("a dialog does not close (Escape, its close button)")

    # -- the app ---------------------------------------------------------------------------

    def js(self, script: str, arg: Any = None) -> Any:
        return self.page.evaluate(script, arg)

    def version(self) -> str:
        return self.js("() => window.__COMFYUI_FRONTEND_VERSION__ || ''")

    def build_graph(self, nodes: list[dict]) -> dict:
        """A UI-format workflow made by the page's own LiteGraph from a compact spec:
        `[{"id": 1, "type": "LoadImage", "widgets": {...}, "links": {"image": [1, 0]}}, …]`."""
        return self.js(BUILD_GRAPH, {"nodes": nodes})

    def load_graph(self, workflow: dict) -> None:
        """Load `workflow` and wait until the canvas has drawn it (LiteGraph lays out the
        widgets, whose positions `widget_point` reads, while drawing)."""
        loaded = self.js("async (w) => { await window.app.loadGraphData(w); window.app.canvas.setDirty(true, true);"
                         " return LiteGraph.getTime(); }", workflow)
        self.page.wait_for_function(
            "(t) => window.app.canvas.last_draw_time > t && !window.app.canvas.dirty_canvas", arg=loaded)

    def widget_value(self, node_id: int, name: str) -> Any:
        return self.js(
            "([id, name]) => window.app.graph.getNodeById(id).widgets.find(w => w.name === name).value",
            [node_id, name],
        )

    def to_client(self, x: float, y: float) -> tuple[float, float]:
        cx, cy = self.js(GRAPH_TO_CLIENT, [x, y])
        return cx, cy

    def widget_point(self, node_id: int, name: str) -> tuple[float, float]:
        """Where widget `name` of node `node_id` is on the page (its middle)."""
        x, y = self.js(
            "([id, name]) => { const n = window.app.graph.getNodeById(id);"
            " const w = n.widgets.find(w => w.name === name);"
            " return [n.pos[0] + n.size[0] / 2, n.pos[1] + w.y + (w.computedHeight || 20) / 2]; }",
            [node_id, name],
        )
        return self.to_client(x, y)

    def input_slot_point(self, node_id: int, slot: int) -> tuple[float, float]:
        x, y = self.js("([id, slot]) => window.app.graph.getNodeById(id).getConnectionPos(true, slot)",
                       [node_id, slot])
        return self.to_client(x, y)

    def node_title_point(self, node_id: int) -> tuple[float, float]:
        """A point on the node's title bar (above `pos`, where LiteGraph draws it)."""
        x, y = self.js("(id) => { const n = window.app.graph.getNodeById(id);"
                       " return [n.pos[0] + 40, n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT / 2]; }", node_id)
        return self.to_client(x, y)

    def drop_file(self, url: str, name: str) -> None:
        """Drop the file at `url` (fetched by the page) onto the middle of the canvas, as a
        drag from the desktop does: dragenter, dragover, drop with a DataTransfer."""
        box = self.page.locator("#graph-canvas").bounding_box()
        self.js(DROP_FILE, [url, name, box["x"] + box["width"] / 2, box["y"] + box["height"] / 2])

    def node_types(self) -> list[str]:
        return self.js("() => window.app.graph.nodes.map(n => n.type).sort()")

    def run(self) -> None:
        self.page.locator('[data-testid="queue-button"]').first.click()

    def wait_for_output_image(self, node_id: int, timeout: float = 60_000) -> dict:
        """Wait until node `node_id` shows an output image; its natural size and src."""
        self.page.wait_for_function(
            "(id) => { const n = window.app.graph.getNodeById(id);"
            " return !!(n && n.imgs && n.imgs[0] && n.imgs[0].complete && n.imgs[0].naturalWidth > 0); }",
            arg=node_id,
            timeout=timeout,
        )
        return self.js(
            "(id) => { const img = window.app.graph.getNodeById(id).imgs[0];"
            " return {width: img.naturalWidth, height: img.naturalHeight, src: img.src}; }",
            node_id,
        )

    # -- waiting for the server --------------------------------------------------------------

    def wait_for_answers(self, routes: Iterable[tuple[str, str]], timeout: float = 20_000) -> None:
        """Wait until each own request `(method, path)` (no query) has had its answer."""
        deadline = time.monotonic() + timeout / 1000
        for method, path in routes:
            if self.recorder.answered(method, path):
                continue
            remaining = (deadline - time.monotonic()) * 1000
            try:
                if remaining <= 0:  # (Playwright's timeout 0 would wait for ever)
                    raise PlaywrightTimeout("deadline")
                self.page.wait_for_event(
                    "response", lambda r, m=method, p=path: self.recorder.own(r.url) and r.request.method == m
                    and self.recorder.path(r.url).split("?")[0] == p, timeout=remaining)
            except PlaywrightTimeout:
                raise AssertionError(f"no answer to {method} {path} within {timeout / 1000:g} s") from None

    def wait_for_message(self, check: Callable[[dict], Any], since: int = 0, timeout: float = 20_000) -> dict:
        """The first websocket message from index `since` on (`len(self.messages)` before an
        action: one that it causes) for which `check` is true; waits for it to come."""
        deadline = time.monotonic() + timeout / 1000
        while True:
            for message in self.messages[since:]:
                if check(message):
                    return message
            since = len(self.messages)
            remaining = (deadline - time.monotonic()) * 1000
            if remaining <= 0 or not self.sockets:
                raise AssertionError(f"no such websocket message within {timeout / 1000:g} s")
            socket = self.sockets[-1]
            try:  # the next frame (or, when the socket closed, the UI's next socket), then look again
                if socket.is_closed():
                    self.page.wait_for_event("websocket", timeout=remaining)
                else:
                    socket.wait_for_event("framereceived", timeout=remaining)
            except PlaywrightTimeout:
                pass
            except PlaywrightError:
                if self.page.is_closed():
                    raise

    def wait_notifications_gone(self, timeout: float = 20_000) -> None:
        """Wait until no notification shows (they go by themselves)."""
        expect(self.page.locator(NOTIFICATION).filter(visible=True)).to_have_count(0, timeout=timeout)

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path))

    def close(self) -> None:
        self.page.close()
