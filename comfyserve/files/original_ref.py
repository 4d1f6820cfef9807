"""Finding the image a mask upload applies to, from the form's `original_ref` JSON."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ValidationError

from comfyserve.files.annotated import split_annotation
from comfyserve.files.errors import FileRequestError
from comfyserve.paths import Folders, PathEscape, safe_join

_SHAPE = '{"filename": "...", "subfolder": "...", "type": "input|output|temp"}'


class OriginalRef(BaseModel):
    """`original_ref` as the frontend sends it; `type` defaults to output, as in ComfyUI."""

    filename: str
    subfolder: str = ""
    type: str | None = None


def parse_original_ref(raw: str | None) -> OriginalRef:
    if raw is None:
        raise FileRequestError(400, "missing_original_ref", f"The form needs an 'original_ref' field: {_SHAPE}.")
    try:
        return OriginalRef.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else "not valid JSON"
        raise FileRequestError(
            400, "invalid_original_ref", f"'original_ref' must be a JSON object {_SHAPE} ({reason})."
        ) from exc


def original_path(folders: Folders, raw: str | None) -> Path:
    """The existing original image `original_ref` names; 400/403/404 FileRequestError otherwise."""
    ref = parse_original_ref(raw)
    name, annotated_kind = split_annotation(ref.filename)
    if not name:
        raise FileRequestError(400, "invalid_original_ref", "'original_ref' has an empty filename.")
    if name.startswith("/") or ".." in name:
        raise FileRequestError(
            400, "path_escape", f"'original_ref' filename {name!r} must not be absolute or contain '..'."
        )
    kind = annotated_kind or ref.type or "output"
    base = folders.directory_by_type(kind)
    if base is None:
        raise FileRequestError(
            400, "invalid_original_ref", f"'original_ref' type {kind!r} is not one of input, output, temp."
        )
    try:
        path = safe_join(base, ref.subfolder, name)
    except PathEscape as exc:
        raise FileRequestError(403, "path_escape", f"'original_ref' points outside the {kind} folder.") from exc
    if not path.is_file():
        shown = f"{ref.subfolder}/{name}" if ref.subfolder else name
        raise FileRequestError(404, "original_not_found", f"The original image {shown!r} is not in the {kind} folder.")
    return path
