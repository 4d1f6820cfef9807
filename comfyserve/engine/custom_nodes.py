"""Loading ComfyUI custom node packs from the `custom_nodes` folders, unchanged.

A pack is a folder with an `__init__.py` or a single `.py` file directly in a `custom_nodes`
root (the base directory's, plus any extra_model_paths.yaml adds). Roots are read in order,
entries sorted by name; names starting with `.`, `__pycache__` and `*.disabled` are skipped,
and with `--disable-all-custom-nodes` every entry not named in `--whitelist-custom-nodes`
(the entry name: `pack` or `pack.py`) is too.

Each pack is imported as ComfyUI imports it: under its path as module name (dots replaced by
`_x_`), so relative imports inside a package work; the ComfyUI module names it imports come
from comfyserve.compat. What it exports:
- `NODE_CLASS_MAPPINGS` (+ `NODE_DISPLAY_NAME_MAPPINGS`): registered with python_module
  `custom_nodes.<name>`; built-in class names are never replaced (later packs may replace an
  earlier pack's). The classes are added to `nodes.NODE_CLASS_MAPPINGS` as well.
- `WEB_DIRECTORY` (relative to the pack's folder), or `[tool.comfy] web` in its pyproject.toml:
  served at `/extensions/<name>/…` and listed by `GET /extensions`.
A pack that raises on import, or exports no NODE_CLASS_MAPPINGS, is logged with its traceback
and marked `(IMPORT FAILED)` in the start-up summary; the others load regardless.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from comfyserve.server.context import ServerContext

log = logging.getLogger(__name__)

MODULE_PARENT = "custom_nodes"


@dataclass
class PackResult:
    """How one pack's import went."""

    name: str
    path: Path
    seconds: float = 0.0
    ok: bool = False
    nodes: list[str] = field(default_factory=list)
    web_directory: Path | None = None
    error: str | None = None


def module_name(path: Path) -> str:
    """A pack's name: the folder name, or the file name without `.py`."""
    return path.stem if path.is_file() else path.name


def find_packs(roots: list[Path], disable_all: bool = False, whitelist: list[str] | None = None) -> list[Path]:
    """Every pack to load, in load order."""
    allowed = set(whitelist or [])
    found: list[Path] = []
    for root in roots:
        try:
            entries = sorted(os.listdir(root))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.startswith(".") or entry == "__pycache__" or entry.endswith(".disabled"):
                continue
            path = root / entry
            if path.is_file() and path.suffix != ".py":
                continue
            if path.is_dir() and not (path / "__init__.py").is_file():
                log.debug("custom_nodes entry %s has no __init__.py; not a pack", path)
                continue
            if not (path.is_file() or path.is_dir()):
                continue
            if disable_all and entry not in allowed:
                log.info("Skipping %s due to disable_all_custom_nodes and whitelist_custom_nodes", entry)
                continue
            found.append(path)
    return found


def import_pack(path: Path) -> ModuleType:
    """Import one pack under ComfyUI's module name for it; on failure nothing stays in sys.modules."""
    if path.is_file():
        sys_name = str(path.with_suffix("")).replace(".", "_x_")
        spec = importlib.util.spec_from_file_location(sys_name, path)
    else:
        sys_name = str(path).replace(".", "_x_")
        spec = importlib.util.spec_from_file_location(sys_name, path / "__init__.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[sys_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if sys.modules.get(sys_name) is module:
            del sys.modules[sys_name]
        raise
    return module


def web_directory(module: ModuleType, path: Path) -> tuple[str, Path] | None:
    """(name to serve under, folder) of a pack's front-end files, or None."""
    folder = path.parent if path.is_file() else path
    name = module_name(path)
    declared = getattr(module, "WEB_DIRECTORY", None)
    if declared is not None:
        candidate = (folder / str(declared)).resolve()
        if candidate.is_dir():
            return name, candidate
    if path.is_dir():
        return _pyproject_web_directory(path)
    return None


def _pyproject_web_directory(path: Path) -> tuple[str, Path] | None:
    # ComfyUI also takes `[tool.comfy] web = "dir"`, served under `[project] name`.
    pyproject = path / "pyproject.toml"
    if not pyproject.is_file():
        return None
    try:
        import tomllib
    except ImportError:  # Python 3.10
        return None
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("custom node pack %s: unreadable pyproject.toml: %s", path.name, exc)
        return None
    web = data.get("tool", {}).get("comfy", {}).get("web")
    project = data.get("project", {}).get("name")
    if not isinstance(web, str) or not isinstance(project, str):
        return None
    candidate = (path / web).resolve()
    return (project, candidate) if candidate.is_dir() else None


def load_pack(ctx: ServerContext, path: Path, builtin_names: set[str]) -> PackResult:
    """Import one pack and register what it exports; never raises."""
    name = module_name(path)
    result = PackResult(name, path)
    started = time.perf_counter()
    try:
        module = import_pack(path)
        found_web = web_directory(module, path)
        if found_web is not None:
            from comfyserve.server.routes.frontend import web_directories

            web_directories(ctx)[found_web[0]] = found_web[1]
            result.web_directory = found_web[1]
        mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
        if mappings is not None:
            register_pack_nodes(ctx, name, module, builtin_names, result)
            result.ok = True
        elif hasattr(module, "comfy_entrypoint"):
            result.error = "comfy_entrypoint (ComfyUI's V3 node API) is not supported yet"
            log.warning("Skip %s module for custom nodes: %s.", path, result.error)
        else:
            result.error = "no NODE_CLASS_MAPPINGS"
            log.warning("Skip %s module for custom nodes due to the lack of NODE_CLASS_MAPPINGS.", path)
    except (Exception, SystemExit) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        log.warning(traceback.format_exc())
        log.warning("Cannot import %s module for custom nodes: %s", path, exc)
    result.seconds = time.perf_counter() - started
    return result


def register_pack_nodes(
    ctx: ServerContext, name: str, module: ModuleType, builtin_names: set[str], result: PackResult
) -> None:
    mappings: dict[str, Any] = dict(module.NODE_CLASS_MAPPINGS)
    display_names: dict[str, str] = dict(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {})
    python_module = f"{MODULE_PARENT}.{name}"
    accepted = {}
    for class_type, cls in mappings.items():
        if class_type in builtin_names:
            log.warning("custom node pack %s: %s is a built-in node name; the built-in node is kept", name, class_type)
            continue
        accepted[class_type] = cls
        try:
            cls.RELATIVE_PYTHON_MODULE = python_module  # what ComfyUI stamps on pack classes
        except (AttributeError, TypeError):
            pass
    ctx.registry.register_mappings(accepted, display_names, python_module=python_module)
    result.nodes = list(accepted)
    builtin_module = sys.modules.get("nodes")
    if builtin_module is not None:
        builtin_module.NODE_CLASS_MAPPINGS.update(accepted)
        builtin_module.NODE_DISPLAY_NAME_MAPPINGS.update({k: v for k, v in display_names.items() if k in accepted})


def load_custom_nodes(ctx: ServerContext) -> list[PackResult]:
    """Load every pack of the `custom_nodes` roots; log ComfyUI's import-time summary."""
    settings = ctx.settings
    folder = ctx.folders.model_folder("custom_nodes")
    roots = list(folder.paths) if folder else [ctx.folders.custom_nodes]
    packs = find_packs(roots, settings.disable_all_custom_nodes, settings.whitelist_custom_nodes)
    builtin_names = set(ctx.registry.entries)
    results = [load_pack(ctx, path, builtin_names) for path in packs]
    log_summary(results)
    ctx.extras["custom_node_packs"] = results
    return results


def log_summary(results: list[PackResult]) -> None:
    if not results:
        return
    lines = ["", "Import times for custom nodes:"]
    for result in sorted(results, key=lambda r: r.seconds):
        marker = "" if result.ok else " (IMPORT FAILED)"
        lines.append(f"{result.seconds:6.1f} seconds{marker}: {result.path}")
    lines.append("")
    log.info("\n".join(lines))
