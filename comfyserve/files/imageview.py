"""`/view` renditions: `preview=fmt;quality` re-encodes, `channel=rgb|a` splits channels.

Rules follow ComfyUI: `preview` takes webp or jpeg (anything else, or a `channel` containing
"a", gives webp; quality defaults to 90); `channel=rgb` is a PNG without alpha; `channel=a`
is an RGBA PNG with black RGB and the image's alpha (opaque when it has none).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from comfyserve.files.errors import FileRequestError

PREVIEW_FORMATS = ("webp", "jpeg")
DEFAULT_QUALITY = 90


@dataclass(frozen=True)
class Rendition:
    body: bytes
    content_type: str


def needs_rendition(preview: str | None, channel: str | None) -> bool:
    """False when the file is served as stored (no preview, channel rgba/absent/unknown)."""
    return preview is not None or channel in ("rgb", "a")


def preview_format(preview: str, channel: str) -> tuple[str, int]:
    """`"jpeg;50"` → `("jpeg", 50)`; unknown formats and alpha channels → webp; quality 90 unless given."""
    parts = preview.split(";")
    fmt = parts[0] if parts[0] in PREVIEW_FORMATS and "a" not in channel else "webp"
    quality = int(parts[-1]) if parts[-1].isdigit() else DEFAULT_QUALITY
    return fmt, max(1, min(quality, 100))


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _has_alpha(image: Image.Image) -> bool:
    return "A" in image.getbands() or "transparency" in image.info


def _alpha(image: Image.Image) -> Image.Image:
    if _has_alpha(image):
        return image.convert("RGBA").getchannel("A")
    return Image.new("L", image.size, 255)


def _for_preview(image: Image.Image, fmt: str, channel: str) -> Image.Image:
    if fmt == "jpeg" or channel == "rgb":
        return image.convert("RGB")
    if image.mode in ("RGB", "RGBA"):
        return image
    return image.convert("RGBA" if _has_alpha(image) else "RGB")


def render(path: Path, preview: str | None, channel: str | None) -> Rendition:
    """Re-encode the image at `path` as the query asks (call only when needs_rendition)."""
    channel = channel or ""
    try:
        with Image.open(path) as image:
            image.load()
            if preview is not None:
                fmt, quality = preview_format(preview, channel)
                encoded = _encode(_for_preview(image, fmt, channel), fmt.upper(), quality=quality)
                return Rendition(encoded, f"image/{fmt}")
            if channel == "rgb":
                return Rendition(_encode(image.convert("RGB"), "PNG"), "image/png")
            alpha_only = Image.new("RGBA", image.size)
            alpha_only.putalpha(_alpha(image))
            return Rendition(_encode(alpha_only, "PNG"), "image/png")
    except UnidentifiedImageError as exc:
        raise FileRequestError(
            400, "not_an_image", f"{path.name!r} is not an image, so 'preview'/'channel' cannot apply: {exc}"
        ) from exc
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise FileRequestError(400, "cannot_render", f"Could not re-encode {path.name!r}: {exc}") from exc

