"""`ExecutionBlocker`: a node output that stops everything downstream of it.

A node returns `ExecutionBlocker(None)` in place of an output to skip the nodes that consume it
silently, or `ExecutionBlocker("why")` to make the first output node it reaches fail with that
message (ComfyUI's `comfy_execution.graph.ExecutionBlocker`; custom packs import it from there).
"""

from __future__ import annotations


class ExecutionBlocker:
    """Stands in for an output value; consumers are blocked instead of run."""

    def __init__(self, message: str | None) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"ExecutionBlocker({self.message!r})"
