"""Small images built in memory for the upload and view tests (the reference used the same kinds)."""

from __future__ import annotations

import io

from PIL import Image
from PIL.PngImagePlugin import PngInfo


def encoded(image: Image.Image, fmt: str = "PNG", pnginfo: PngInfo | None = None) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, pnginfo=pnginfo) if pnginfo else image.save(out, format=fmt)
    return out.getvalue()


def png(color: tuple[int, ...] = (255, 0, 0, 255), size: tuple[int, int] = (16, 16)) -> bytes:
    """A flat RGBA PNG; the default is byte-identical to the reference's `red.png`."""
    return encoded(Image.new("RGBA", size, color))


def jpeg(size: tuple[int, int] = (8, 8)) -> bytes:
    return encoded(Image.new("RGB", size, (10, 120, 240)), "JPEG")


def original_with_text(size: tuple[int, int] = (8, 8)) -> bytes:
    """The reference's mask original: flat (200, 100, 50) RGB with `prompt` and `custom` text chunks."""
    info = PngInfo()
    info.add_text("prompt", '{"k":1}')
    info.add_text("custom", "v")
    return encoded(Image.new("RGB", size, (200, 100, 50)), pnginfo=info)


def gradient_mask(size: tuple[int, int] = (8, 8)) -> bytes:
    """Alpha = 32·x (capped): the reference's mask pixels (0,0)→0, (3,0)→96, (7,5)→224."""
    mask = Image.new("RGBA", size)
    for x in range(size[0]):
        for y in range(size[1]):
            mask.putpixel((x, y), (0, 0, 0, min(255, 32 * x)))
    return encoded(mask)


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
