"""Where an upload goes: its `type` folder, `subfolder`, file name and `overwrite` flag, checked."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from comfyserve.files.errors import FileRequestError
from comfyserve.paths import Folders, PathEscape, safe_join

UPLOAD_TYPES = ("input", "temp", "output")


@dataclass(frozen=True)
class UploadTarget:
    """The checked destination of one upload, and the values the answer echoes."""

    directory: Path
    kind: str
    subfolder: str
    filename: str
    overwrite: bool


def upload_target(folders: Folders, fields: Mapping[str, str], filename: str) -> UploadTarget:
    """Check the form's `type`, `subfolder`, `overwrite` and the file name against the folders.

    Traversal answers ComfyUI's bare 400; what ComfyUI fails on with a 500 (unknown type,
    a folder inside the file name) gets a 400 that says what to send instead.
    """
    kind = fields.get("type") or "input"
    base = folders.directory_by_type(kind)
    if base is None:
        raise FileRequestError(
            400, "invalid_upload_type", f"Unknown upload type {kind!r}: use one of {', '.join(UPLOAD_TYPES)}."
        )
    subfolder = fields.get("subfolder", "")
    try:
        directory = safe_join(base, subfolder)
        safe_join(directory, filename)
    except PathEscape as exc:
        raise FileRequestError(400, "path_escape", f"Refused upload path: {exc}.", bare=True) from exc
    if "/" in filename or filename in ("", ".", ".."):
        raise FileRequestError(
            400,
            "invalid_filename",
            f"{filename!r} is not a plain file name; send folders in the 'subfolder' field.",
        )
    overwrite = fields.get("overwrite") in ("true", "1")
    return UploadTarget(directory, kind, subfolder, filename, overwrite)
