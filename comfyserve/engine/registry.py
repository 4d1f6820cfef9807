"""The node registry: class_type → node class, and the `/object_info` description of each.

Node classes follow ComfyUI's class protocol ("V1"): `INPUT_TYPES()`, `RETURN_TYPES`,
`FUNCTION`, `CATEGORY`, `OUTPUT_NODE` and the optional attributes. The registry is the one
source of truth for both `/object_info` and validation.

ComfyUI describes nodes written with its newer "v3" schema with more keys, present even when
false or null (`output_tooltips`, `output_matchtypes`, `deprecated`, `experimental`,
`api_node`). A V1 class standing in for such a node sets `V3_SCHEMA = True` to be described
the same way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class NodeEntry:
    """A registered node class and where it came from."""

    class_type: str
    cls: type
    display_name: str
    python_module: str


@dataclass
class NodeRegistry:
    """All node classes the server can execute."""

    entries: dict[str, NodeEntry] = field(default_factory=dict)
    _info_cache: tuple[Any, bytes] | None = field(default=None, repr=False)

    def register_mappings(
        self,
        class_mappings: dict[str, type],
        display_names: dict[str, str] | None = None,
        python_module: str = "nodes",
    ) -> None:
        """Add ComfyUI-style `NODE_CLASS_MAPPINGS` (+ display names) from one module or pack."""
        display_names = display_names or {}
        for class_type, cls in class_mappings.items():
            self.entries[class_type] = NodeEntry(
                class_type, cls, display_names.get(class_type, class_type), python_module
            )
        self._info_cache = None

    def get(self, class_type: str) -> type | None:
        entry = self.entries.get(class_type)
        return entry.cls if entry else None

    def __contains__(self, class_type: object) -> bool:
        return class_type in self.entries

    def is_output_node(self, class_type: str) -> bool:
        cls = self.get(class_type)
        return bool(cls is not None and getattr(cls, "OUTPUT_NODE", False))

    def is_output_node_of(self, prompt: dict[str, dict[str, Any]]) -> Callable[[str], bool]:
        """A predicate: is node `node_id` of `prompt` an output node?"""
        return lambda node_id: self.is_output_node(prompt[node_id].get("class_type", ""))

    def node_info(self, class_type: str) -> dict[str, Any]:
        """One node's `/object_info` entry, field for field as ComfyUI builds it."""
        entry = self.entries[class_type]
        return describe_node(entry)

    def object_info(self) -> dict[str, dict[str, Any]]:
        """The whole `/object_info` mapping; a node that fails to describe itself is left out."""
        info: dict[str, dict[str, Any]] = {}
        for class_type, entry in self.entries.items():
            try:
                info[class_type] = describe_node(entry)
            except Exception:
                log.exception("node %s failed to describe its inputs; left out of /object_info", class_type)
        return info

    def object_info_bytes(self, stamp: Callable[[], Any]) -> bytes:
        """The encoded `/object_info`, rebuilt only when `stamp()` (folder mtimes) changes."""
        key = stamp()
        cached = self._info_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        body = json.dumps(self.object_info()).encode()
        self._info_cache = (key, body)
        return body


def input_types(cls: type) -> dict[str, dict[str, Any]]:
    """Call a node class's `INPUT_TYPES()`; always returns a dict of sections."""
    spec = cls.INPUT_TYPES()
    return spec if isinstance(spec, dict) else {}


def return_types(cls: type) -> list[str]:
    return list(getattr(cls, "RETURN_TYPES", ()))


def describe_node(entry: NodeEntry) -> dict[str, Any]:
    """Build one node's `/object_info` description from its class attributes."""
    cls = entry.cls
    spec = input_types(cls)
    outputs = return_types(cls)
    info: dict[str, Any] = {
        "input": spec,
        "input_order": {section: list(values.keys()) for section, values in spec.items()},
        "output": outputs,
        "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(outputs))),
        "output_name": list(getattr(cls, "RETURN_NAMES", outputs)),
        "name": entry.class_type,
        "display_name": entry.display_name,
        "description": getattr(cls, "DESCRIPTION", ""),
        # ComfyUI reads the module from the class, where its loader put it (comfy_extras.*);
        # only the class's own attribute counts, so subclasses elsewhere report their own module.
        "python_module": vars(cls).get("RELATIVE_PYTHON_MODULE", entry.python_module),
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
    }
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = list(cls.OUTPUT_TOOLTIPS)
    if getattr(cls, "DEPRECATED", False):
        info["deprecated"] = True
    if getattr(cls, "EXPERIMENTAL", False):
        info["experimental"] = True
    if hasattr(cls, "API_NODE"):
        info["api_node"] = cls.API_NODE  # ComfyUI lists it whenever the class defines it, false too
    if getattr(cls, "V3_SCHEMA", False):
        info.setdefault("output_tooltips", [None] * len(outputs))
        info["output_matchtypes"] = getattr(cls, "OUTPUT_MATCHTYPES", None)
        info["deprecated"] = bool(getattr(cls, "DEPRECATED", False))
        info["experimental"] = bool(getattr(cls, "EXPERIMENTAL", False))
        info["api_node"] = bool(getattr(cls, "API_NODE", False))
    return info


def iter_input_specs(cls: type) -> Iterable[tuple[str, str, Any]]:
    """(section, input name, spec) for every declared input of a node class."""
    for section, values in input_types(cls).items():
        if isinstance(values, dict):
            for name, value in values.items():
                yield section, name, value
