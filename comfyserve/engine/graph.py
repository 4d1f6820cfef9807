"""Execution order: which node runs next, with ComfyUI's choice among ready nodes.

Nodes are added from each requested output back through their links (depth-first, last
input first, as ComfyUI's stack does); cached nodes are not added. Among ready nodes the
pick prefers output nodes, then nodes that feed an output directly, then at two removes —
so previews appear as early as possible — else the first ready node in insertion order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def is_link(value: Any) -> bool:
    """A `[node_id, output_index]` link, as prompts write them."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], (str, int))
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


class ExecutionOrder:
    """The nodes still to run for one prompt and what blocks them."""

    def __init__(
        self,
        prompt: dict[str, dict[str, Any]],
        is_cached: Callable[[str], bool],
        is_output: Callable[[str], bool],
    ) -> None:
        self.prompt = prompt
        self.is_cached = is_cached
        self.is_output = is_output
        self.pending: dict[str, None] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, None]] = {}

    def add_output(self, node_id: str) -> None:
        """Schedule `node_id` and every uncached node it depends on."""
        stack = [node_id]
        links: list[tuple[str, str]] = []
        while stack:
            current = stack.pop()
            if current in self.pending:
                continue
            self.pending[current] = None
            self.block_count[current] = 0
            self.blocking[current] = {}
            for value in self.prompt[current].get("inputs", {}).values():
                if is_link(value):
                    source = str(value[0])
                    if not self.is_cached(source):
                        stack.append(source)
                    links.append((source, current))
        for source, target in links:
            self._link(source, target)

    def _link(self, source: str, target: str) -> None:
        if self.is_cached(source):
            return
        if source not in self.pending:
            self.add_output(source)
        if target not in self.blocking[source]:
            self.blocking[source][target] = None
            self.block_count[target] += 1

    def is_empty(self) -> bool:
        return not self.pending

    def next_node(self) -> str | None:
        """The node to run next, or None when nothing is ready (a cycle)."""
        ready = [n for n in self.pending if self.block_count[n] == 0]
        if not ready:
            return None
        for node in ready:
            if self.is_output(node):
                return node
        for node in ready:
            if any(self.is_output(b) for b in self.blocking[node]):
                return node
        for node in ready:
            if any(self.is_output(b2) for b in self.blocking[node] for b2 in self.blocking[b]):
                return node
        return ready[0]

    def complete(self, node_id: str) -> None:
        """Mark `node_id` done; unblock what waited on it."""
        for target in self.blocking.pop(node_id, {}):
            self.block_count[target] -= 1
        self.pending.pop(node_id, None)
        self.block_count.pop(node_id, None)
