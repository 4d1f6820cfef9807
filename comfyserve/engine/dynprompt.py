"""The prompt as it grows while it runs: the submitted nodes plus those node expansion adds.

A node may return `{"result": ..., "expand": graph}`; the graph's nodes become *ephemeral*
nodes of this prompt. Each remembers the node that expanded into it (its parent), the node the
UI should highlight while it runs (its display node) and, through its parents, the submitted
node it came from (its real node) — the ids ComfyUI puts in `executing`, `executed` and `meta`.
"""

from __future__ import annotations

from typing import Any


class DynamicPrompt:
    """Submitted nodes and ephemeral ones, looked up by id."""

    def __init__(self, prompt: dict[str, dict[str, Any]]) -> None:
        self.original = prompt
        self.ephemeral: dict[str, dict[str, Any]] = {}
        self.parents: dict[str, str] = {}
        self.display: dict[str, str] = {}

    def __getitem__(self, node_id: str) -> dict[str, Any]:
        node = self.ephemeral.get(node_id)
        if node is None:
            node = self.original[node_id]
        return node

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.ephemeral or node_id in self.original

    def get(self, node_id: str, default: Any = None) -> Any:
        return self[node_id] if node_id in self else default

    def add_ephemeral_node(self, node_id: str, node: dict[str, Any], parent_id: str, display_id: str) -> None:
        self.ephemeral[node_id] = node
        self.parents[node_id] = parent_id
        self.display[node_id] = display_id

    def parent_of(self, node_id: str) -> str | None:
        return self.parents.get(node_id)

    def real_node_id(self, node_id: str) -> str:
        """The submitted node an ephemeral node descends from (itself for submitted nodes)."""
        while node_id in self.parents:
            node_id = self.parents[node_id]
        return node_id

    def display_node_id(self, node_id: str) -> str:
        """The node the UI shows as running: an expansion's `override_display_id`, else the
        display node of its parent, else itself."""
        seen = set()
        while node_id in self.display and node_id not in seen:
            seen.add(node_id)
            shown = self.display[node_id]
            if shown == node_id:
                break
            node_id = shown
        return node_id

    def is_ephemeral(self, node_id: str) -> bool:
        return node_id in self.ephemeral

    def all_node_ids(self) -> list[str]:
        return [*self.original, *(n for n in self.ephemeral if n not in self.original)]
