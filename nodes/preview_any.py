"""PreviewAny ("Preview as Text"): shows any value as text in the web UI, as ComfyUI's does.

Strings show as they are, numbers and booleans through str(), anything else as indented JSON,
or str() when it is not JSON-serialisable (tensors, models).
"""

from __future__ import annotations

import json
from typing import Any

UNSERIALIZABLE = "source exists, but could not be serialized."


def as_text(source: Any) -> str:
    """ComfyUI's text for a previewed value."""
    if source is None:
        return "None"
    if isinstance(source, str):
        return source
    if isinstance(source, (int, float, bool)):
        return str(source)
    try:
        return json.dumps(source, indent=4)
    except Exception:
        try:
            return str(source)
        except Exception:
            return UNSERIALIZABLE


class PreviewAny:
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_preview_any"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"source": ("*", {})}}

    RETURN_TYPES = ()
    FUNCTION = "main"
    OUTPUT_NODE = True
    CATEGORY = "utils"

    def main(self, source: Any = None) -> dict[str, Any]:
        return {"ui": {"text": (as_text(source),)}}


NODE_CLASS_MAPPINGS = {"PreviewAny": PreviewAny}
NODE_DISPLAY_NAME_MAPPINGS = {"PreviewAny": "Preview as Text"}
