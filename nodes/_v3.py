"""What the built-in nodes that ComfyUI 0.8 writes with its v3 schema share.

These nodes are plain V1 classes here; `V3_SCHEMA` makes the registry describe them with v3's
extra `/object_info` keys, and their inputs are declared in the spelling v3 produces (an empty
options dict on every socket, `COMBO` with `options` and `multiselect`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class V3Node:
    """Base of the built-in nodes ComfyUI defines with `io.Schema`; each sets RELATIVE_PYTHON_MODULE."""

    V3_SCHEMA = True
    OUTPUT_TOOLTIPS: tuple[str | None, ...] = (None,)


def combo(options: Iterable[str], **extra: Any) -> tuple[str, dict[str, Any]]:
    """A v3 combo input: `("COMBO", {"multiselect": False, "options": [...]})` (+ `default`, ...)."""
    return ("COMBO", {**extra, "multiselect": False, "options": list(options)})
