"""Preview images: which method a prompt asked for, and encoding them for the websocket.

ComfyUI's previewers and `send_sync(UNENCODED_PREVIEW_IMAGE, …)` pass
`("JPEG" | "PNG", PIL image, max size)`; the engine's progress API and websocket frames want
encoded bytes. The method comes from the prompt's `extra_data.preview_method`, else from
`--preview-method`; ComfyUI's default is none, and some clients take any binary frame for an
output image, so nothing is sent unless asked for.
"""

from __future__ import annotations

import io
from typing import Any

from comfyserve.engine.progress import Preview

MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png"}
METHODS = ("none", "auto", "latent2rgb", "taesd")
DEFAULT_MAX_SIZE = 512

_server_method = "none"
_server_max_size = DEFAULT_MAX_SIZE
_prompt_method: str | None = None


def configure(method: str, max_size: int = DEFAULT_MAX_SIZE) -> None:
    """The server's `--preview-method` and `--preview-size`."""
    global _server_method, _server_max_size
    _server_method = method if method in METHODS else "none"
    _server_max_size = max_size


def set_prompt_method(method: Any) -> None:
    """The running prompt's `extra_data.preview_method` (None or "default": the server's)."""
    global _prompt_method
    _prompt_method = method if method in METHODS else None


def method() -> str:
    """The preview method in force for the running prompt."""
    return _prompt_method or _server_method


def max_size() -> int:
    return _server_max_size
# Binary frame image format numbers (after the event type), as ComfyUI numbers them.
FORMAT_NUMBERS = {"image/jpeg": 1, "image/png": 2}


def encode_preview(value: Any) -> Preview | None:
    """`(format, PIL image, max size)` → `(media type, bytes)`; an already encoded preview passes through."""
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) < 2:
        raise TypeError(f"a preview is (format, image, max_size), got {type(value).__name__}")
    kind, image = value[0], value[1]
    if isinstance(image, (bytes, bytearray)):
        return str(kind), bytes(image)
    from PIL import Image, ImageOps

    fmt = str(kind).upper()
    if fmt not in MEDIA_TYPES:
        raise ValueError(f"preview format must be JPEG or PNG, got {kind!r}")
    max_size = value[2] if len(value) > 2 else None
    if max_size:
        image = ImageOps.contain(image, (max_size, max_size), Image.Resampling.BILINEAR)
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=95, compress_level=1)
    return MEDIA_TYPES[fmt], buffer.getvalue()
