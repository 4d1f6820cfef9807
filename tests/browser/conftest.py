"""Browser fixtures: one headless Chromium per session, a comfyserve process per test, tabs that
record what went wrong, and a screenshot (plus the page's problems and the server log) under
`test-artifacts/browser/` for every failed test."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.browser import frontends
from tests.browser.ui import VIEWPORT, UiPage, chromium_available, launch_browser
from tests.serverproc import REPO, ServerProcess

ARTIFACTS = REPO / "test-artifacts" / "browser"
PACKS = REPO / "tests" / "packs"
# The UI's settings after its first start (templates browser seen and closed).
SEEN_TUTORIAL = {"Comfy.TutorialCompleted": True}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if chromium_available():
        return
    if os.environ.get("CI"):
        return  # in CI a missing browser must fail the run, not skip it (.ci/run installs it)
    skip = pytest.mark.skip(reason="no chromium (apt-get install chromium)")
    for item in items:
        if "tests/browser/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    # One per module, not per session: while Playwright's sync API is active it runs an asyncio
    # loop in the main thread, and the test modules after this one start loops of their own.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_browser(playwright)
        yield chromium
        chromium.close()


def _failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "report_call", None)
    return report is not None and report.failed


def _stem(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid.split("::", 1)[-1])


@pytest.fixture
def start_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """`start_server(frontend, *args, first_start=False, packs=())`: a comfyserve process serving
    that UI build; unless `first_start`, its user already closed the templates browser once;
    `packs` names test node packs (tests/packs/) copied into its custom_nodes/."""
    started: list[ServerProcess] = []

    def start(frontend: str = frontends.INSTALLED, *args: str, first_start: bool = False,
              packs: tuple[str, ...] = ()) -> ServerProcess:
        base = tmp_path / f"base{len(started)}"
        for pack in packs:
            shutil.copytree(PACKS / pack, base / "custom_nodes" / pack)
        # ComfyUI ships input/example.png, LoadImage's default; without a file its combo is
        # empty and the UI asks /view for "undefined".
        (base / "input").mkdir(parents=True)
        Image.new("RGB", (16, 16), (90, 90, 90)).save(base / "input" / "example.png")
        if not first_start:
            user = base / "user" / "default"
            user.mkdir(parents=True)
            (user / "comfy.settings.json").write_text(json.dumps(SEEN_TUTORIAL))
        proc = ServerProcess(base, args=[*frontends.server_args(frontend), *args]).start()
        started.append(proc)
        return proc

    yield start
    for index, proc in enumerate(started):
        proc.stop()
        if _failed(request):
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            (ARTIFACTS / f"{_stem(request)}-server{index}.log").write_text(proc.log())


@pytest.fixture
def open_ui(request: pytest.FixtureRequest, browser, start_server) -> Iterator[Callable[..., UiPage]]:
    """`open_ui(url)`: a tab in a fresh browser context; screenshots saved if the test fails."""
    pages: list[UiPage] = []
    contexts: list = []

    def open_tab(url: str) -> UiPage:
        context = browser.new_context(viewport=VIEWPORT, accept_downloads=False)
        contexts.append(context)
        page = UiPage(context, url)
        pages.append(page)
        return page

    yield open_tab
    if _failed(request):
        stem = _stem(request)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for index, page in enumerate(pages):
            try:
                page.screenshot(ARTIFACTS / f"{stem}-{index}.png")
            except Exception as exc:  # a crashed page: keep the rest of the evidence
                print(f"no screenshot of tab {index}: {exc}")
            problems = "\n".join(str(p) for p in page.recorder.problems)
            (ARTIFACTS / f"{stem}-{index}.problems.txt").write_text(problems + "\n")
    for context in contexts:
        context.close()
