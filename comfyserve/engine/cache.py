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


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _literal_key(value: Any) -> str:
    """A widget value as a hashable key: `1`, `1.0` and `True` stay apart, as do `"1"` and `[1]`."""
    if type(value) in _SCALARS:  # most inputs; json.dumps with options costs ~20 µs a call
        return f"{type(value).__name__}:{value!r}"
    try:
        return json.dumps(value, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return repr(value)


class Signatures:
    """Every node's signature (hashable), computed on first use and kept for the prompt.

    Works over a `DynamicPrompt`: an ephemeral node's signature also holds its parent's, so
    the same expansion of the same node is reused and nothing else collides with it.
    """

    def __init__(self, prompt: Any, registry: NodeRegistry) -> None:
        self.prompt = prompt
        self.registry = registry
        self._known: dict[str, Any] = {}
        self._visiting: set[str] = set()
        # What each node's IS_CHANGED answered (ComfyUI shows it in the prompt nodes receive).
        self.is_changed: dict[str, Any] = {}

    def __getitem__(self, node_id: str) -> Any:
        known = self._known.get(node_id)
        if known is not None:
            return known
        if node_id in self._visiting or node_id not in self.prompt:
            return ("missing", node_id)
        self._visiting.add(node_id)
        try:
            node = self.prompt[node_id]
            class_type = node.get("class_type")
            cls = self.registry.get(class_type)
            inputs = node.get("inputs", {})
            parts = []
            for name in sorted(inputs):
                value = inputs[name]
                if is_link(value):
                    parts.append((name, "link", self[str(value[0])], value[1]))
                else:
                    parts.append((name, _literal_key(value)))
            changed = None
            if cls is not None and getattr(cls, "IS_CHANGED", None) is not None:
                raw, changed = _is_changed(cls, inputs, node_id)
                self.is_changed[node_id] = raw
            keeps_id = cls is not None and (getattr(cls, "OUTPUT_NODE", False) or getattr(cls, "NOT_IDEMPOTENT", False))
            parent = getattr(self.prompt, "parent_of", lambda _: None)(node_id)
            signature = (
                class_type,
                node_id if keeps_id else None,
                changed,
                tuple(parts),
                self[parent] if parent is not None else None,
            )
        finally:
            self._visiting.discard(node_id)
        self._known[node_id] = signature
        return signature

    def values(self) -> set[Any]:
        """The signatures computed so far: what this prompt used."""
        return set(self._known.values())


def compute_signatures(prompt: Any, registry: NodeRegistry) -> Signatures:
    """Signatures of every node of `prompt` (computed now, so IS_CHANGED runs at prompt start)."""
    signatures = Signatures(prompt, registry)
    for node_id in list(prompt.all_node_ids() if hasattr(prompt, "all_node_ids") else prompt):
        signatures[node_id]
    return signatures


def _is_changed(cls: type, inputs: dict[str, Any], node_id: str) -> tuple[Any, Any]:
    """(IS_CHANGED's raw answer, its part of the signature). NaN or an error: always run."""
    literal = {k: v for k, v in inputs.items() if not is_link(v)}
    try:
        answer = cls.IS_CHANGED(**literal)
    except Exception:
        log.warning("IS_CHANGED of node %s failed; the node will run", node_id, exc_info=True)
        return float("nan"), _Unique()
    if isinstance(answer, float) and math.isnan(answer):
        return answer, _Unique()
    return answer, _literal_key(answer)


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
