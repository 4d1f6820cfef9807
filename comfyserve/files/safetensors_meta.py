"""The `__metadata__` of a .safetensors file, read from its header alone (no tensors loaded).

The format starts with an 8-byte little-endian header length, then that many bytes of JSON.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from comfyserve.files.errors import FileRequestError

# The safetensors format caps its JSON header at 100 MB.
MAX_HEADER_BYTES = 100_000_000


def _invalid(path: Path, why: str) -> FileRequestError:
    return FileRequestError(422, "invalid_safetensors", f"{path.name!r} is not a valid .safetensors file: {why}.")


def read_metadata(path: Path) -> dict[str, str] | None:
    """The header's `__metadata__` object, or None when the file has none."""
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise _invalid(path, "shorter than its 8-byte header length")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            raise _invalid(path, f"header length {length} exceeds the format's limit")
        raw = f.read(length)
    if len(raw) < length:
        raise _invalid(path, "the header is cut short")
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise _invalid(path, f"the header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise _invalid(path, "the header is not a JSON object")
    metadata = header.get("__metadata__")
    return metadata if isinstance(metadata, dict) else None
