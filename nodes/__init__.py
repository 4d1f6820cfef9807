"""The built-in nodes, importable as `nodes` the way ComfyUI's custom nodes expect.

Every submodule that defines `NODE_CLASS_MAPPINGS` (and optionally `NODE_DISPLAY_NAME_MAPPINGS`)
is merged here, so adding a node family is adding a module. Node classes are also module
attributes (`nodes.SaveImage`), as custom nodes that subclass or call core nodes expect.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil

log = logging.getLogger(__name__)

# Defined before the submodules load: they import it from here.
MAX_RESOLUTION = 16384

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}


def _load_submodules() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{__name__}.{info.name}")
        except Exception:
            log.exception("built-in node module nodes.%s failed to import; its nodes are unavailable", info.name)
            continue
        mappings = getattr(module, "NODE_CLASS_MAPPINGS", None) or {}
        NODE_CLASS_MAPPINGS.update(mappings)
        NODE_DISPLAY_NAME_MAPPINGS.update(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {})
        for class_type, cls in mappings.items():
            if class_type.isidentifier() and class_type not in globals():
                globals()[class_type] = cls


_load_submodules()
