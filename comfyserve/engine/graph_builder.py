"""`GraphBuilder`: how a node writes the graph it expands into (ComfyUI's node expansion helper).

A node that returns `{"result": ..., "expand": graph}` builds `graph` with a GraphBuilder:

    graph = GraphBuilder()
    a = graph.node("EmptyImage", width=64, height=64)
    b = graph.node("ImageInvert", image=a.out(0))
    return {"result": (b.out(0),), "expand": graph.finalize()}

Node ids are prefixed per builder so that two expansions (or two calls of one node over a list)
never collide. The prefix is `"<root>.<call index>.<graph index>."`: the executor sets root and
call index with `GraphBuilder.set_default_prefix(node_id, call_index)` before it calls a node,
and every builder made during that call takes the next graph index. Custom packs import this
module as `comfy_execution.graph_utils`.
"""

from __future__ import annotations

import contextvars
from typing import Any

from comfyserve.engine.blocker import ExecutionBlocker

__all__ = ["ExecutionBlocker", "GraphBuilder", "Node", "add_graph_prefix", "is_link"]


def is_link(value: Any) -> bool:
    """True for a link to a node output: a 2-item list `[node id (str), output index (number)]`."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], (int, float))
        and not isinstance(value[1], bool)
    )


class Node:
    """One node of a graph under construction."""

    def __init__(self, id: str, class_type: str, inputs: dict[str, Any]) -> None:
        self.id = id
        self.class_type = class_type
        self.inputs = inputs
        self.override_display_id: str | None = None

    def out(self, index: int) -> list[Any]:
        """A link to output `index` of this node, to pass as another node's input."""
        return [self.id, index]

    def set_input(self, key: str, value: Any) -> None:
        """Set input `key`; `None` removes it."""
        if value is None:
            self.inputs.pop(key, None)
        else:
            self.inputs[key] = value

    def get_input(self, key: str) -> Any:
        return self.inputs.get(key)

    def set_override_display_id(self, override_display_id: str) -> None:
        """Make the UI highlight node `override_display_id` while this node runs."""
        self.override_display_id = override_display_id

    def serialize(self) -> dict[str, Any]:
        data: dict[str, Any] = {"class_type": self.class_type, "inputs": self.inputs}
        if self.override_display_id is not None:
            data["override_display_id"] = self.override_display_id
        return data

    def __repr__(self) -> str:
        return f"Node({self.id!r}, {self.class_type!r})"


# (root, call index, next graph index) for builders made without an explicit prefix.
_DEFAULT_PREFIX: contextvars.ContextVar[tuple[str, int, int]] = contextvars.ContextVar(
    "comfyserve_graph_builder_prefix", default=("", 0, 0)
)


class GraphBuilder:
    """Collects nodes with prefixed ids and turns them into a prompt-shaped graph."""

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = GraphBuilder.alloc_prefix() if prefix is None else prefix
        self.nodes: dict[str, Node] = {}
        self.id_gen = 1

    @classmethod
    def set_default_prefix(cls, prefix_root: str, call_index: int, graph_index: int = 0) -> None:
        """What the executor calls before running a node: builders made now get this root."""
        _DEFAULT_PREFIX.set((prefix_root, call_index, graph_index))

    @classmethod
    def alloc_prefix(cls, root: str | None = None, call_index: int | None = None, graph_index: int | None = None) -> str:
        """The next `"<root>.<call index>.<graph index>."`; each call moves the default graph index on."""
        default_root, default_call, default_graph = _DEFAULT_PREFIX.get()
        prefix = (
            f"{default_root if root is None else root}."
            f"{default_call if call_index is None else call_index}."
            f"{default_graph if graph_index is None else graph_index}."
        )
        _DEFAULT_PREFIX.set((default_root, default_call, default_graph + 1))
        return prefix

    def node(self, class_type: str, id: str | None = None, **inputs: Any) -> Node:
        """Add a node (or return the one already made with that id); ids are numbered 1, 2, … by default."""
        if id is None:
            id = str(self.id_gen)
            self.id_gen += 1
        full_id = self.prefix + id
        existing = self.nodes.get(full_id)
        if existing is not None:
            return existing
        made = Node(full_id, class_type, inputs)
        self.nodes[full_id] = made
        return made

    def lookup_node(self, id: str) -> Node | None:
        """The node made with (unprefixed) id `id`, or None."""
        return self.nodes.get(self.prefix + id)

    def finalize(self) -> dict[str, dict[str, Any]]:
        """The graph as a prompt: prefixed id → `{class_type, inputs[, override_display_id]}`."""
        return {node_id: node.serialize() for node_id, node in self.nodes.items()}

    def replace_node_output(self, node_id: str, index: int, new_value: Any) -> None:
        """Point every input linked to output `index` of `node_id` at `new_value` (None: drop those inputs)."""
        target = self.prefix + node_id
        for node in self.nodes.values():
            for key, value in list(node.inputs.items()):
                if is_link(value) and value[0] == target and value[1] == index:
                    if new_value is None:
                        del node.inputs[key]
                    else:
                        node.inputs[key] = new_value

    def remove_node(self, id: str) -> None:
        del self.nodes[self.prefix + id]


def add_graph_prefix(
    graph: dict[str, dict[str, Any]], outputs: list[Any] | tuple[Any, ...], prefix: str
) -> tuple[dict[str, dict[str, Any]], tuple[Any, ...]]:
    """`graph` with every node id (and every link inside it and in `outputs`) prefixed by `prefix`."""

    def moved(value: Any) -> Any:
        return [prefix + value[0], value[1]] if is_link(value) else value

    prefixed = {
        prefix + node_id: {
            "class_type": node["class_type"],
            "inputs": {name: moved(value) for name, value in node.get("inputs", {}).items()},
        }
        for node_id, node in graph.items()
    }
    return prefixed, tuple(moved(output) for output in outputs)
