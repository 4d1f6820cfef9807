"""Which file a `/view` query names, with ComfyUI's checks and statuses (bare bodies).

No filename → 404; empty → 400; absolute or containing ".." → 400; unknown type → 400;
subfolder leaving the folder → 403; missing → 404. Folders in the filename are dropped
(basename), as ComfyUI does. Unlike ComfyUI, containment is checked after resolving
symlinks, so a link inside input/ that points elsewhere is refused (403).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from comfyserve.files.annotated import split_annotation
from comfyserve.files.errors import FileRequestError
from comfyserve.paths import Folders, PathEscape, safe_join

DEFAULT_VIEW_TYPE = "output"


def _refuse(status: int, kind: str, message: str) -> FileRequestError:
    return FileRequestError(status, kind, message, bare=True)


def view_path(folders: Folders, query: Mapping[str, str]) -> tuple[Path, str]:
    """(the file to serve, symlinks resolved; the name to show) for `/view`'s query."""
    if "filename" not in query:
        raise _refuse(404, "missing_filename", "no filename given")
    name, annotated_kind = split_annotation(query["filename"])
    if not name:
        raise _refuse(400, "invalid_filename", "empty filename")
    if name.startswith("/") or ".." in name:
        raise _refuse(400, "invalid_filename", "absolute or '..' filename")
    kind = annotated_kind or query.get("type", DEFAULT_VIEW_TYPE)
    base = folders.directory_by_type(kind)
    if base is None:
        raise _refuse(400, "invalid_type", f"unknown type {kind!r}")
    shown = os.path.basename(name)
    try:
        path = safe_join(base, query.get("subfolder", ""), shown)
    except PathEscape as exc:
        raise _refuse(403, "path_escape", str(exc)) from exc
    if not path.is_file():
        raise _refuse(404, "not_found", "no such file")
    return path, shown
