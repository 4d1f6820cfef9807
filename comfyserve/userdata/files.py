"""Paths and listings inside one user's folder, as ComfyUI's `/userdata` routes show them.

Client paths are URL-decoded once more when they still hold a `%` (ComfyUI does; clients
rely on `workflows%252Fa.json` working), then checked twice: the path as written must stay in
the user's folder, and so must its target once symlinks are resolved.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from comfyserve.paths import PathEscape, is_within, safe_join


def user_path(root: Path, raw: str, allow_root: bool = False) -> Path:
    """`raw` (client-supplied, maybe URL-encoded) as a path inside `root`; raise PathEscape if not.

    The result keeps symlinks unresolved, so deleting or replacing a link acts on the link.
    """
    rel = unquote(raw) if "%" in raw else raw
    if not rel:
        raise PathEscape("empty path")
    root = root.resolve()
    safe_join(root, rel)
    lexical = Path(os.path.normpath(root / rel))
    if lexical != root and root not in lexical.parents:
        raise PathEscape("path leaves its folder")
    if lexical == root and not allow_root:
        raise PathEscape("path names the user folder itself")
    return lexical


def relative(path: Path, root: Path) -> str:
    """`path` relative to `root` with forward slashes."""
    return os.path.relpath(path, root).replace(os.sep, "/")


def file_info(path: Path, root: Path) -> dict[str, Any]:
    """ComfyUI's FileInfo: path relative to `root`, size, modified and created (float seconds)."""
    st = path.stat()
    return {"path": relative(path, root), "size": st.st_size, "modified": st.st_mtime, "created": st.st_ctime}


def _contained_file(path: Path, user_root: Path) -> bool:
    return path.is_file() and is_within(path, user_root)


def listed_files(directory: Path, recurse: bool, user_root: Path) -> list[Path]:
    """Files in `directory` (and below with `recurse`), sorted by relative path.

    Like a shell glob: names starting with `.` are skipped, and so are symlinked folders and
    links whose target lies outside `user_root`.
    """
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")] if recurse else []
        for name in filenames:
            path = Path(dirpath) / name
            if not name.startswith(".") and _contained_file(path, user_root):
                found.append(path)
    return sorted(found, key=lambda p: relative(p, directory))


def listing_entry(path: Path, directory: Path, full_info: bool, split: bool) -> Any:
    """One `/userdata?dir=` item: FileInfo, `[rel, *parts]` (split), or the relative path."""
    if full_info:
        return file_info(path, directory)
    rel = relative(path, directory)
    return [rel, *rel.split("/")] if split else rel


def tree(directory: Path, user_root: Path) -> list[dict[str, Any]]:
    """`/v2/userdata`: every folder and file under `directory`, folders first, then by name.

    Paths are relative to `user_root`; links leading out of it are left out.
    """
    entries: list[dict[str, Any]] = []
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in dirnames:
            path = Path(dirpath) / name
            if is_within(path, user_root):
                entries.append({"name": name, "path": relative(path, user_root), "type": "directory"})
        for name in filenames:
            path = Path(dirpath) / name
            if not is_within(path, user_root):
                continue
            entry: dict[str, Any] = {"name": name, "path": relative(path, user_root), "type": "file"}
            try:
                st = path.stat()
            except OSError:
                pass  # a dangling link or a race: list it without size and time
            else:
                entry["size"] = st.st_size
                entry["modified"] = st.st_mtime
            entries.append(entry)
    entries.sort(key=lambda e: (e["type"] != "directory", e["name"].lower()))
    return entries
