"""Per-prompt progress: the `progress_state` node map and the progress API nodes call.

The executor installs a `ProgressReporter` while a node runs; `report(value, max)` from node
code (or `comfy.utils.ProgressBar`) sends `progress` and `progress_state` for that node.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

Send = Callable[[str, dict[str, Any]], None]
# (media type, encoded image) — "image/jpeg" or "image/png".
Preview = tuple[str, bytes]
SendPreview = Callable[[str, Preview, bool], None]


class ProgressState:
    """ComfyUI's `progress_state` map for one prompt: every node touched so far."""

    def __init__(self, prompt_id: str, send_state: Send) -> None:
        self.prompt_id = prompt_id
        self.nodes: dict[str, dict[str, Any]] = {}
        self._send_state = send_state

    def _set(self, node_id: str, state: str, value: float, maximum: float) -> None:
        self.nodes[node_id] = {
            "value": float(value),
            "max": float(maximum),
            "state": state,
            "node_id": node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }
        self._send_state("progress_state", {"prompt_id": self.prompt_id, "nodes": dict(self.nodes)})

    def start(self, node_id: str) -> None:
        self._set(node_id, "running", 0.0, 1.0)

    def update(self, node_id: str, value: float, maximum: float) -> None:
        self._set(node_id, "running", value, maximum)

    def finish(self, node_id: str) -> None:
        current = self.nodes.get(node_id)
        maximum = current["max"] if current else 1.0
        self._set(node_id, "finished", maximum, maximum)


class ProgressReporter:
    """What the running node reports to: `progress` events plus the state map."""

    def __init__(
        self,
        prompt_id: str,
        node_id: str,
        state: ProgressState,
        send: Send,
        send_preview: SendPreview | None = None,
    ) -> None:
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.state = state
        self._send = send
        self._send_preview = send_preview

    def report(self, value: float, maximum: float, preview: Preview | None = None) -> None:
        """`progress` (+ a binary preview frame when given), then the updated state map.

        ComfyUI sends metadata previews (type 4) just before `progress` and plain ones (type 1)
        just after it; the sink picks the kind each client asked for.
        """
        if preview is not None and self._send_preview is not None:
            self._send_preview(self.node_id, preview, True)
        self._send("progress", {"value": value, "max": maximum, "prompt_id": self.prompt_id, "node": self.node_id})
        if preview is not None and self._send_preview is not None:
            self._send_preview(self.node_id, preview, False)
        self.state.update(self.node_id, value, maximum)


# A context variable, so an async node's task (which copies the context it was created in)
# keeps reporting for its own node while other nodes run; threads a node starts itself see no
# context value and report for the node the executor is running now.
_current: ContextVar[ProgressReporter | None] = ContextVar("comfyserve_progress", default=None)
_running: ProgressReporter | None = None


def set_current(reporter: ProgressReporter | None) -> None:
    global _running
    _current.set(reporter)
    _running = reporter


def current() -> ProgressReporter | None:
    """The reporter of the node running now (None outside execution)."""
    return _current.get() or _running


def report(value: float, maximum: float, preview: Preview | None = None) -> None:
    """Report progress (and optionally a preview image) of the node running now; a no-op outside execution."""
    reporter = current()
    if reporter is not None:
        reporter.report(value, maximum, preview)
