"""Preview images as ComfyUI code hands them over, turned into the engine's `(media type, bytes)`.

ComfyUI's latent previewers and `send_sync(UNENCODED_PREVIEW_IMAGE, …)` pass
`("JPEG" | "PNG", PIL image, max size)`; the engine's progress API and websocket frames want
encoded bytes.
"""

from __future__ import annotations

import io
from typing import Any

from comfyserve.engine.progress import Preview

MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png"}
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
