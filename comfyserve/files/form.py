"""Reading an upload form: the file part is streamed to a temp file, bounded by --max-upload-size.

Browsers send the file before `type`/`subfolder`, so the destination is only known once the
whole form is read; the bytes therefore wait in an anonymous temp file (hashed on the way).
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage

from comfyserve.files.errors import FileRequestError
from comfyserve.files.uploads import Blob

FILE_FIELD = "image"
# Multipart framing and the small text fields, allowed on top of the file itself.
FRAMING_ALLOWANCE = 1024 * 1024
_TEXT_FIELD_LIMIT = 64 * 1024
_CHUNK = 64 * 1024


@dataclass
class UploadForm:
    """The uploaded file (name + bytes) and the form's text fields (first value of each)."""

    filename: str
    blob: Blob
    fields: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        self.blob.close()


def too_large(limit: int) -> FileRequestError:
    return FileRequestError(
        413,
        "upload_too_large",
        f"The upload is larger than this server accepts ({limit / (1024 * 1024):g} MB, set by --max-upload-size).",
    )


async def read_upload_form(request: web.Request, limit: int) -> UploadForm:
    """Parse a multipart upload; FileRequestError(400/413) when it is not one ComfyUI would take."""
    if request.content_type != "multipart/form-data":
        raise FileRequestError(
            400,
            "invalid_upload",
            f"Uploads must be multipart/form-data with the file in a field named '{FILE_FIELD}' "
            f"(got {request.content_type!r}).",
        )
    if request.content_length is not None and request.content_length > limit + FRAMING_ALLOWANCE:
        raise too_large(limit)
    fields: dict[str, str] = {}
    upload: tuple[str, Blob] | None = None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if request.content.total_bytes > limit + FRAMING_ALLOWANCE:
                raise too_large(limit)
            if not isinstance(part, BodyPartReader):
                raise FileRequestError(400, "invalid_upload", "Nested multipart bodies are not supported.")
            if part.name == FILE_FIELD and upload is None:
                upload = (_upload_name(part), await _spool(part, limit))
            elif part.name and part.filename is None and part.name not in fields:
                fields[part.name] = await _read_text(part)
    except (ValueError, BadHttpMessage) as exc:
        if upload is not None:
            upload[1].close()
        raise FileRequestError(400, "invalid_upload", f"The multipart body could not be read: {exc}") from exc
    except BaseException:
        if upload is not None:
            upload[1].close()
        raise
    if upload is None:
        raise FileRequestError(
            400, "missing_file", f"The form has no file field named '{FILE_FIELD}'; send the file in it."
        )
    return UploadForm(upload[0], upload[1], fields)


def _upload_name(part: BodyPartReader) -> str:
    if part.filename is None:
        raise FileRequestError(
            400, "missing_file", f"The '{FILE_FIELD}' field must be a file upload, not a text value."
        )
    if not part.filename:
        raise FileRequestError(400, "invalid_filename", "The uploaded file has an empty file name.")
    return part.filename


async def _spool(part: BodyPartReader, limit: int) -> Blob:
    spool = tempfile.TemporaryFile()
    digest = hashlib.sha256()
    size = 0
    try:
        while chunk := await part.read_chunk(_CHUNK):
            data = part.decode(chunk)
            size += len(data)
            if size > limit:
                raise too_large(limit)
            digest.update(data)
            spool.write(data)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return Blob(spool, size, digest.hexdigest())


async def _read_text(part: BodyPartReader) -> str:
    raw = bytearray()
    while chunk := await part.read_chunk(_CHUNK):
        raw.extend(chunk)
        if len(raw) > _TEXT_FIELD_LIMIT:
            raise FileRequestError(
                400, "invalid_upload", f"Form field '{part.name}' is longer than {_TEXT_FIELD_LIMIT} bytes."
            )
    try:
        return bytes(part.decode(bytes(raw))).decode(part.get_charset("utf-8"))
    except (UnicodeDecodeError, LookupError) as exc:
        raise FileRequestError(400, "invalid_upload", f"Form field '{part.name}' is not text: {exc}") from exc
