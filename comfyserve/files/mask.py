"""Merging a painted mask into its original image: the original's RGB, the mask's alpha.

The result keeps the original's PNG text chunks (prompt, workflow), as ComfyUI's does. A mask
painted at another resolution but the same aspect ratio is scaled to the original's size;
a mask of a different shape is refused rather than stretched.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from comfyserve.files.errors import FileRequestError

# Relative difference of width/height ratios still taken as "the same shape" (rounding).
_ASPECT_TOLERANCE = 0.01


def _open(source: Path | BinaryIO, what: str) -> Image.Image:
    try:
        image = Image.open(source)
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise FileRequestError(400, "invalid_image", f"The {what} is not an image that can be read: {exc}") from exc
    return image


def _same_shape(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return abs(a[0] * b[1] - b[0] * a[1]) <= _ASPECT_TOLERANCE * a[0] * b[1]


def _text_chunks(image: Image.Image) -> PngInfo:
    info = PngInfo()
    for key, value in getattr(image, "text", {}).items():
        info.add_text(key, value)
    return info


def apply_mask(original: Path, mask: BinaryIO) -> bytes:
    """PNG bytes: `original`'s pixels with the alpha channel of `mask`."""
    with _open(original, "original image") as base, _open(mask, "uploaded mask") as painted:
        chunks = _text_chunks(base)
        alpha = painted.convert("RGBA").getchannel("A")
        if alpha.size != base.size:
            if not _same_shape(alpha.size, base.size):
                raise FileRequestError(
                    400,
                    "mask_size_mismatch",
                    f"The mask is {alpha.size[0]}x{alpha.size[1]} but the original is "
                    f"{base.size[0]}x{base.size[1]}; paint the mask at the original's size.",
                )
            alpha = alpha.resize(base.size, Image.Resampling.BILINEAR)
        merged = base.convert("RGBA")
        merged.putalpha(alpha)
    out = io.BytesIO()
    merged.save(out, format="PNG", compress_level=4, pnginfo=chunks)
    return out.getvalue()
