"""Images between files and tensors: ComfyUI's IMAGE/MASK conventions and its PNG metadata.

IMAGE is float32 [batch, height, width, channels] in 0..1; MASK is float32 [batch, height,
width]. Conversions to 8 bits truncate (`uint8` cast after `255 * x`), as ComfyUI's do, so
saved files carry the same pixels as ComfyUI's.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, ImageSequence, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

log = logging.getLogger(__name__)

T = TypeVar("T")

# Pillow modes that hold 16 bits per pixel; ComfyUI's mode "I" also means 16-bit data.
SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
# Multi-picture JPEGs (camera MPO files) hold a second view, not animation frames.
FIRST_FRAME_ONLY_FORMATS = frozenset({"MPO"})
# ComfyUI's mask for an image without alpha.
EMPTY_MASK_SIZE = (64, 64)
MAX_PNG_KEYWORD = 79


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """One IMAGE item [height, width, channels] → an 8-bit PIL image (L, RGB or RGBA)."""
    if image.requires_grad or image.device.type != "cpu" or image.dtype != torch.float32:
        image = image.detach().to("cpu", torch.float32)
    pixels = image.numpy()  # no torch call on the usual path: each one lets the GIL go
    data = np.clip(255.0 * pixels, 0, 255).astype(np.uint8)
    channels = data.shape[-1] if data.ndim == 3 else 0
    if channels == 1:
        return Image.fromarray(data[..., 0])
    if channels in (3, 4):
        return Image.fromarray(data)
    raise ValueError(f"Cannot turn an image of shape {tuple(image.shape)} into a picture: expected 1, 3 or 4 channels.")


def pil_to_tensor(picture: Image.Image) -> torch.Tensor:
    """An 8-bit PIL image → float32 [height, width, channels] in 0..1."""
    return torch.from_numpy(np.array(picture).astype(np.float32) / 255.0)


def png_metadata(prompt: Any, extra_pnginfo: Any) -> PngInfo:
    """tEXt chunks: `prompt` first, then one per `extra_pnginfo` key, each value JSON-encoded."""
    metadata = PngInfo()
    if prompt is not None:
        metadata.add_text("prompt", json.dumps(prompt))
    if isinstance(extra_pnginfo, Mapping):
        for key, value in extra_pnginfo.items():
            if not _valid_keyword(key):
                log.warning("extra_pnginfo key %r cannot be a PNG text keyword; left out of the file", key)
                continue
            metadata.add_text(key, json.dumps(value))
    elif extra_pnginfo is not None:
        log.warning("extra_pnginfo is a %s, not an object; no extra PNG text written", type(extra_pnginfo).__name__)
    return metadata


def _valid_keyword(key: Any) -> bool:
    # PNG keywords: 1-79 Latin-1 characters, no NUL.
    if not isinstance(key, str) or not 0 < len(key) <= MAX_PNG_KEYWORD or "\x00" in key:
        return False
    try:
        key.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def save_png(
    picture: Image.Image, path: Path, metadata: PngInfo | None, compress_level: int, atomic: bool = True
) -> None:
    """Write a PNG. `atomic`: `path` only ever appears complete (temporary file, then rename).
    Otherwise (scratch files such as previews) the encoded bytes go straight into a new file —
    one file operation less — and FileExistsError is raised rather than overwriting."""
    if not atomic:
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", pnginfo=metadata, compress_level=compress_level)
        data = buffer.getbuffer()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
        finally:
            os.close(fd)
        return
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        picture.save(temporary, format="PNG", pnginfo=metadata, compress_level=compress_level)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def with_truncated_retry(action: Callable[[T], Any], argument: T) -> Any:
    """Run a PIL action; if it fails, once more with truncated files allowed (ComfyUI's leniency)."""
    try:
        return action(argument)
    except (OSError, ValueError):
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            return action(argument)
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def load_image_file(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read an image file as ComfyUI's LoadImage does: (IMAGE [frames,H,W,3], MASK [frames,h,w]).

    Every frame of the first frame's size becomes a batch item (EXIF orientation applied);
    the mask is 1 − alpha, or 64×64 zeros when no frame has transparency.
    """
    with with_truncated_retry(Image.open, str(path)) as picture:
        frames: list[np.ndarray] = []
        alphas: list[np.ndarray | None] = []
        size: tuple[int, int] | None = None
        for frame in ImageSequence.Iterator(picture):
            frame = with_truncated_retry(ImageOps.exif_transpose, frame)
            if size is None:
                size = frame.size
            if frame.size != size:
                continue
            frames.append(_rgb_array(frame))
            alphas.append(_alpha_array(frame))
            if picture.format in FIRST_FRAME_ONLY_FORMATS:
                break
    if not frames:
        raise UnidentifiedImageError(f"no frames in image file '{path}'")
    images = torch.from_numpy(np.stack(frames))
    return images, _masks(alphas, images.shape[1], images.shape[2])


def _rgb_array(frame: Image.Image) -> np.ndarray:
    if frame.mode in SIXTEEN_BIT_MODES:
        gray = np.clip(np.asarray(frame).astype(np.float32) / 65535.0, 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.array(frame.convert("RGB")).astype(np.float32) / 255.0


def _alpha_array(frame: Image.Image) -> np.ndarray | None:
    if "A" in frame.getbands():
        alpha = frame.getchannel("A")
    elif frame.mode == "P" and "transparency" in frame.info:
        alpha = frame.convert("RGBA").getchannel("A")
    else:
        return None
    return np.array(alpha).astype(np.float32) / 255.0


def _masks(alphas: list[np.ndarray | None], height: int, width: int) -> torch.Tensor:
    """1 − alpha per frame; frames without alpha get zeros of the frame size, or 64×64 if none has it."""
    if all(alpha is None for alpha in alphas):
        return torch.zeros((len(alphas), *EMPTY_MASK_SIZE), dtype=torch.float32)
    masks = [
        1.0 - torch.from_numpy(alpha) if alpha is not None else torch.zeros((height, width), dtype=torch.float32)
        for alpha in alphas
    ]
    return torch.stack(masks)
