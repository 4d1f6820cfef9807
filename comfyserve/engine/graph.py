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
    """The nodes still to run for one prompt and what blocks them.

    A node is blocked by each uncached node it links to (except through lazy inputs, which
    only block once `make_input_strong_link` asks for them) and by each external block (an
    async task still running). `next_node` does not remove the node it picks: the executor
    calls `complete` when the node is done, or leaves it pending (lazy inputs requested, an
    expansion or an async task to wait for) and it is picked again once unblocked.
    """

    def __init__(
        self,
        prompt: Any,
        is_cached: Callable[[str], bool],
        is_output: Callable[[str], bool],
        is_lazy: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.prompt = prompt
        self.is_cached = is_cached
        self.is_output = is_output
        self.is_lazy = is_lazy or (lambda node_id, input_name: False)
        self.pending: dict[str, None] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, None]] = {}
        self.external_blocks = 0

    def add_output(self, node_id: str) -> None:
        """Schedule `node_id` and every uncached node it depends on (lazy inputs excepted)."""
        self.add_node(node_id)

    def add_node(self, node_id: str, include_lazy: bool = False) -> None:
        stack = [node_id]
        links: list[tuple[str, str]] = []
        while stack:
            current = stack.pop()
            if current in self.pending:
                continue
            self.pending[current] = None
            self.block_count[current] = 0
            self.blocking[current] = {}
            for name, value in self.prompt[current].get("inputs", {}).items():
                if not is_link(value):
                    continue
                if not include_lazy and self.is_lazy(current, name):
                    continue
                source = str(value[0])
                if not self.is_cached(source):
                    stack.append(source)
                links.append((source, current))
        for source, target in links:
            self.add_strong_link(source, target)

    def add_strong_link(self, source: str, target: str) -> None:
        """`target` may not run before `source` (unless `source` is already done or cached)."""
        if self.is_cached(source):
            return
        if source not in self.pending:
            self.add_node(source)
        if target not in self.blocking[source]:
            self.blocking[source][target] = None
            self.block_count[target] += 1

    def make_input_strong_link(self, node_id: str, input_name: str) -> None:
        """A lazy input was asked for: its source must now run before `node_id`."""
        value = self.prompt[node_id]["inputs"][input_name]
        if is_link(value):
            self.add_strong_link(str(value[0]), node_id)

    def add_external_block(self, node_id: str) -> Callable[[], None]:
        """Block `node_id` until the returned callback is called (an async task finishing)."""
        self.block_count[node_id] += 1
        self.external_blocks += 1

        def unblock() -> None:
            self.external_blocks -= 1
            self.block_count[node_id] -= 1

        return unblock

    def is_empty(self) -> bool:
        return not self.pending

    def ready(self) -> list[str]:
        return [n for n in self.pending if self.block_count[n] == 0]

    def next_node(self) -> str | None:
        """The node to run next, or None when nothing is ready (waiting on tasks, or a cycle)."""
        ready = self.ready()
        if not ready:
            return None
        for node in ready:
            if self.is_output(node):
                return node
        for node in ready:
            if any(self.is_output(b) for b in self.blocking[node]):
                return node
        for node in ready:
            if any(self.is_output(b2) for b in self.blocking[node] for b2 in self.blocking.get(b, {})):
                return node
        return ready[0]

    def complete(self, node_id: str) -> None:
        """Mark `node_id` done; unblock what waited on it."""
        for target in self.blocking.pop(node_id, {}):
            self.block_count[target] -= 1
        self.pending.pop(node_id, None)
        self.block_count.pop(node_id, None)

    def cycle_members(self) -> list[str]:
        """With nothing ready and no task running: the pending nodes that block each other."""
        blocked_by: dict[str, set[str]] = {n: set() for n in self.pending}
        for source, targets in self.blocking.items():
            for target in targets:
                if target in blocked_by and source in self.pending:
                    blocked_by[target].add(source)
        # Drop nodes that only wait on nodes outside any cycle, until nothing changes.
        alive = set(self.pending)
        changed = True
        while changed:
            changed = False
            for node in list(alive):
                if not any(t in alive for t in self.blocking.get(node, {})):
                    alive.discard(node)
                    changed = True
        return [n for n in self.pending if n in alive]
