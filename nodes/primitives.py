"""ComfyUI's primitive nodes: a constant INT, FLOAT, STRING or BOOLEAN typed once and wired to many inputs.

`/object_info` entries are ComfyUI 0.8's (`comfy_extras.nodes_primitive`, a v3-schema module):
the number bounds are ±sys.maxsize, and the Int widget offers "control after generate".
"""

from __future__ import annotations

import sys
from typing import Any

from nodes._v3 import V3Node

CATEGORY = "utils/primitive"


class _Primitive(V3Node):
    """Passes its one widget value through unchanged."""

    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_primitive"
    FUNCTION = "execute"
    CATEGORY = CATEGORY
    VALUE: tuple[str, dict[str, Any]]

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        kind, options = cls.VALUE
        return {"required": {"value": (kind, dict(options))}}

    def execute(self, value: Any) -> tuple[Any]:
        return (value,)


class PrimitiveString(_Primitive):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_primitive"
    VALUE = ("STRING", {"multiline": False})
    RETURN_TYPES = ("STRING",)


class PrimitiveStringMultiline(_Primitive):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_primitive"
    VALUE = ("STRING", {"multiline": True})
    RETURN_TYPES = ("STRING",)


class PrimitiveInt(_Primitive):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_primitive"
    VALUE = ("INT", {"min": -sys.maxsize, "max": sys.maxsize, "control_after_generate": True})
    RETURN_TYPES = ("INT",)


class PrimitiveFloat(_Primitive):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_primitive"
    VALUE = ("FLOAT", {"min": -sys.maxsize, "max": sys.maxsize, "step": 0.1})
    RETURN_TYPES = ("FLOAT",)


class PrimitiveBoolean(_Primitive):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_primitive"
    VALUE = ("BOOLEAN", {})
    RETURN_TYPES = ("BOOLEAN",)


NODE_CLASS_MAPPINGS = {
    "PrimitiveString": PrimitiveString,
    "PrimitiveStringMultiline": PrimitiveStringMultiline,
    "PrimitiveInt": PrimitiveInt,
    "PrimitiveFloat": PrimitiveFloat,
    "PrimitiveBoolean": PrimitiveBoolean,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PrimitiveString": "String",
    "PrimitiveStringMultiline": "String (Multiline)",
    "PrimitiveInt": "Int",
    "PrimitiveFloat": "Float",
    "PrimitiveBoolean": "Boolean",
}
