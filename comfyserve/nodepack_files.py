"""Files that custom node packs ship for the web UI, found by folder convention.

A pack is a folder under a `custom_nodes` root. The web UI reads from packs:
- translations: `locales/<lang>/main.json` (+ `nodeDefs.json`, `commands.json`, `settings.json`),
- example workflows: `*.json` in sub-folders whose name contains `example` or `workflow`,
- reusable subgraphs: `subgraphs/*.json`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from comfyserve.paths import PathEscape, safe_join

log = logging.getLogger(__name__)

EXTRA_LOCALE_FILES = ("nodeDefs.json", "commands.json", "settings.json")
EXAMPLE_DIR_MARKERS = ("example", "workflow")
SUBGRAPH_SOURCE = "custom_node"


def pack_dirs(roots: Iterable[Path]) -> list[Path]:
    """Every pack folder under the `custom_nodes` roots, sorted by name within a root."""
    packs: list[Path] = []
    for root in roots:
        if root.is_dir():
            packs.extend(sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))))
    return packs


def _json_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.json") if p.is_file() and not p.name.startswith("."))


def _load_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.error("custom node file %s is not readable JSON: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def merge_recursive(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` updated with `extra`; nested objects are merged rather than replaced."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_recursive(merged[key], value)
        else:
            merged[key] = value
    return merged


def translations(roots: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """The `/i18n` body: language code → merged translations of every pack."""
    result: dict[str, dict[str, Any]] = {}
    for pack in pack_dirs(roots):
        locales = pack / "locales"
        if not locales.is_dir():
            continue
        for lang_dir in sorted(p for p in locales.iterdir() if p.is_dir()):
            found = _load_json_object(lang_dir / "main.json") if (lang_dir / "main.json").is_file() else {}
            for extra in EXTRA_LOCALE_FILES:
                extra_path = lang_dir / extra
                data = _load_json_object(extra_path) if extra_path.is_file() else {}
                if data:
                    found[extra.removesuffix(".json")] = data
            lang = result.setdefault(lang_dir.name, {})
            if found:
                result[lang_dir.name] = merge_recursive(lang, found)
    return result


def example_dirs(pack: Path) -> list[Path]:
    """A pack's example-workflow folders: sub-folders named like `*example*` or `*workflow*`."""
    return sorted(
        p for p in pack.iterdir() if p.is_dir() and any(marker in p.name for marker in EXAMPLE_DIR_MARKERS)
    )


def workflow_templates(roots: Iterable[Path]) -> dict[str, list[str]]:
    """The `/workflow_templates` body: pack name → example workflow names; packs without any left out."""
    result: dict[str, list[str]] = {}
    for pack in pack_dirs(roots):
        names = [f.stem for folder in example_dirs(pack) for f in _json_files(folder)]
        if names:
            result[pack.name] = names
    return result


def workflow_template_file(roots: Iterable[Path], pack_name: str, filename: str) -> Path | None:
    """The file `filename` inside one of pack `pack_name`'s example folders, or None."""
    for pack in pack_dirs(roots):
        if pack.name != pack_name:
            continue
        for folder in example_dirs(pack):
            try:
                candidate = safe_join(folder, filename)
            except PathEscape:
                return None
            if candidate.is_file():
                return candidate
    return None


def _subgraph_files(roots: Iterable[Path]) -> dict[str, tuple[str, Path]]:
    found: dict[str, tuple[str, Path]] = {}
    for pack in pack_dirs(roots):
        folder = pack / "subgraphs"
        if folder.is_dir():
            for file in _json_files(folder):
                subgraph_id = hashlib.sha256(f"{SUBGRAPH_SOURCE}{file.as_posix()}".encode()).hexdigest()
                found[subgraph_id] = (pack.name, file)
    return found


def _subgraph_entry(pack_name: str, file: Path) -> dict[str, Any]:
    return {"source": SUBGRAPH_SOURCE, "name": file.stem, "info": {"node_pack": f"custom_nodes.{pack_name}"}}


def global_subgraphs(roots: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """The `/global_subgraphs` body: stable id → subgraph description (without its data)."""
    return {sid: _subgraph_entry(pack, file) for sid, (pack, file) in _subgraph_files(roots).items()}


def global_subgraph(roots: Iterable[Path], subgraph_id: str) -> dict[str, Any] | None:
    """One subgraph's description plus `data` (the file's JSON text), or None for an unknown id."""
    found = _subgraph_files(roots).get(subgraph_id)
    if found is None:
        return None
    pack, file = found
    return {**_subgraph_entry(pack, file), "data": file.read_text(encoding="utf-8")}
