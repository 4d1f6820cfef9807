"""Node output caching across prompts, keyed by each node's input signature.

A node's signature covers its class, its literal inputs, its `IS_CHANGED` answer and the
signatures of everything it links to — so a cached output is reused exactly when nothing
upstream changed. Modes: classic (keep what the last prompt used), lru N, none.
"""

from __future__ import annotations

import json
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from comfyserve.engine.graph import is_link
from comfyserve.engine.registry import NodeRegistry

log = logging.getLogger(__name__)


@dataclass
class CachedNode:
    """What a node produced: one list of values per output, and its UI dict (or None)."""

    outputs: list[list[Any]]
    ui: dict[str, Any] | None


class _Unique:
    """Never equal to anything else: for IS_CHANGED answers that mean 'always run'."""

    __slots__ = ()


def _literal_key(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return repr(value)


def compute_signatures(prompt: dict[str, dict[str, Any]], registry: NodeRegistry) -> dict[str, Any]:
    """Signature of every node in `prompt` (hashable)."""
    signatures: dict[str, Any] = {}
    visiting: set[str] = set()

    def signature(node_id: str) -> Any:
        if node_id in signatures:
            return signatures[node_id]
        if node_id in visiting or node_id not in prompt:
            return ("missing", node_id)
        visiting.add(node_id)
        node = prompt[node_id]
        class_type = node.get("class_type")
        cls = registry.get(class_type)
        inputs = node.get("inputs", {})
        parts = []
        for name in sorted(inputs):
            value = inputs[name]
            if is_link(value):
                parts.append((name, "link", signature(str(value[0])), value[1]))
            else:
                parts.append((name, _literal_key(value)))
        changed = _is_changed(cls, inputs, node_id) if cls is not None else None
        own_id = node_id if cls is not None and (getattr(cls, "OUTPUT_NODE", False) or getattr(cls, "NOT_IDEMPOTENT", False)) else None
        visiting.discard(node_id)
        signatures[node_id] = (class_type, own_id, changed, tuple(parts))
        return signatures[node_id]

    for node_id in prompt:
        signature(node_id)
    return signatures


def _is_changed(cls: type, inputs: dict[str, Any], node_id: str) -> Any:
    method = getattr(cls, "IS_CHANGED", None)
    if method is None:
        return None
    literal = {k: v for k, v in inputs.items() if not is_link(v)}
    try:
        answer = method(**literal)
    except Exception:
        log.warning("IS_CHANGED of node %s failed; the node will run", node_id, exc_info=True)
        return _Unique()
    if isinstance(answer, float) and math.isnan(answer):
        return _Unique()
    return _literal_key(answer)


class OutputCache:
    """Cached node results by signature."""

    def __init__(self, mode: str = "classic", lru_size: int = 0) -> None:
        self.mode = mode
        self.lru_size = lru_size
        self._entries: OrderedDict[Any, CachedNode] = OrderedDict()

    def get(self, signature: Any) -> CachedNode | None:
        entry = self._entries.get(signature)
        if entry is not None and self.mode == "lru":
            self._entries.move_to_end(signature)
        return entry

    def put(self, signature: Any, entry: CachedNode) -> None:
        self._entries[signature] = entry
        self._entries.move_to_end(signature)

    def end_prompt(self, used: set[Any]) -> None:
        """Drop what the mode does not keep once a prompt is done."""
        if self.mode == "none":
            self._entries.clear()
        elif self.mode == "lru":
            while len(self._entries) > max(self.lru_size, 0):
                self._entries.popitem(last=False)
        else:
            for key in [k for k in self._entries if k not in used]:
                del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()
