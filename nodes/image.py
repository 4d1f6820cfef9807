"""ComfyUI's core image nodes: load, save, preview, empty, invert and resize.

Names, inputs, categories and numerics are ComfyUI's, so workflows and `/object_info` carry
over unchanged; attribute names custom nodes rely on when they subclass SaveImage/PreviewImage
(`output_dir`, `type`, `prefix_append`, `compress_level`, `save_images`) are kept.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import random
import string
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from comfyserve import runtime
from comfyserve.files.annotated import split_annotation
from comfyserve.imageio import load_image_file, pil_to_tensor, png_metadata, save_png, tensor_to_pil
from comfyserve.paths import PathEscape, safe_join
from comfyserve.save_path import COUNTERS, get_save_image_path, next_counter, numbered_filename
from nodes import MAX_RESOLUTION

UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
CROP_METHODS = ["disabled", "center"]
HASH_CHUNK = 1 << 20


# -- file names the client picks ------------------------------------------------------------
def annotated_path(name: str, default_type: str = "input") -> Path:
    """The file an annotated name refers to; raises PathEscape if it lies outside its folder."""
    filename, kind = split_annotation(name)
    folder = runtime.folders().directory_by_type(kind or default_type)
    if folder is None:
        raise PathEscape(f"unknown folder type {kind or default_type!r}")
    return safe_join(folder, filename)


def top_level_files(folder: Path) -> list[str]:
    """Names of the files (not folders) directly in `folder`, sorted; none if it does not exist."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    return sorted(entry.name for entry in entries if entry.is_file())


def input_image_files() -> list[str]:
    """Image files at the top of the input folder, sorted: LoadImage's choices."""
    return [name for name in top_level_files(runtime.folders().input) if is_image_name(name)]


def is_image_name(name: str) -> bool:
    """Does the file's extension say image (ComfyUI's content-type filter; `.webp` always counts)?"""
    if name.lower().endswith(".webp"):
        return True
    mime, _ = mimetypes.guess_type(name, strict=False)
    return bool(mime) and mime.split("/")[0] == "image"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# -- resampling -----------------------------------------------------------------------------
def center_crop(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop [N,C,H,W] symmetrically to the aspect ratio of width×height (ComfyUI's rounding)."""
    old_height, old_width = samples.shape[-2], samples.shape[-1]
    old_aspect, new_aspect = old_width / old_height, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_width - old_width * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_height - old_height * (old_aspect / new_aspect)) / 2)
    return samples.narrow(-2, y, old_height - y * 2).narrow(-1, x, old_width - x * 2)


def lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Lanczos resize of [N,C,H,W] through 8-bit PIL images, as ComfyUI does."""
    resized = []
    for item in samples:
        picture = tensor_to_pil(item.movedim(0, -1)).resize((width, height), resample=Image.Resampling.LANCZOS)
        tensor = pil_to_tensor(picture)
        resized.append(tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.movedim(-1, 0))
    return torch.stack(resized).to(samples.device, samples.dtype)


def common_upscale(samples: torch.Tensor, width: int, height: int, upscale_method: str, crop: str) -> torch.Tensor:
    """Resize [N,C,H,W] to width×height: torch interpolation, or PIL for lanczos; optional center crop."""
    source = center_crop(samples, width, height) if crop == "center" else samples
    if upscale_method == "lanczos":
        return lanczos(source, width, height)
    if upscale_method not in UPSCALE_METHODS:
        raise ValueError(f"Unknown upscale method {upscale_method!r}; expected one of {', '.join(UPSCALE_METHODS)}.")
    return torch.nn.functional.interpolate(source, size=(height, width), mode=upscale_method)


# -- nodes ----------------------------------------------------------------------------------
class SaveImage:
    def __init__(self) -> None:
        self.output_dir = str(runtime.folders().output)
        self.type = "output"
        self.prefix_append = ""
        self.compress_level = 4

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": (
                    "STRING",
                    {
                        "default": "ComfyUI",
                        "tooltip": "The prefix for the file to save. This may include formatting information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes.",
                    },
                ),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "image"
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."

    def save_images(
        self, images: torch.Tensor, filename_prefix: str = "ComfyUI", prompt: Any = None, extra_pnginfo: Any = None
    ) -> dict[str, Any]:
        filename_prefix += self.prefix_append
        height, width = images.shape[1], images.shape[2]
        folder, stem, counter, subfolder, _ = get_save_image_path(filename_prefix, self.output_dir, width, height)
        metadata = None if runtime.settings().disable_metadata else png_metadata(prompt, extra_pnginfo)
        results = []
        scratch = self.type == "temp"  # previews: no rename dance, the temp folder is scratch space
        for batch_number, image in enumerate(images):
            picture = tensor_to_pil(image)
            while True:
                filename = numbered_filename(stem, batch_number, counter)
                target = Path(folder) / filename
                try:
                    if not scratch and target.exists():
                        raise FileExistsError(target)
                    save_png(picture, target, metadata, self.compress_level, atomic=not scratch)
                    break
                except FileExistsError:
                    # The folder changed under us (within the mtime's resolution): never overwrite.
                    COUNTERS.forget(Path(folder))
                    counter = max(counter + 1, next_counter(Path(folder), stem))
            results.append({"filename": filename, "subfolder": subfolder, "type": self.type})
            counter += 1
        COUNTERS.saved(Path(folder), stem, [r["filename"] for r in results], counter - 1)
        return {"ui": {"images": results}}


class PreviewImage(SaveImage):
    def __init__(self) -> None:
        self.output_dir = str(runtime.folders().temp)
        self.type = "temp"
        self.prefix_append = "_temp_" + "".join(random.choice(string.ascii_lowercase) for _ in range(5))
        self.compress_level = 1

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"images": ("IMAGE",)}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}


class LoadImage:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": (input_image_files(), {"image_upload": True})}}

    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"

    def load_image(self, image: str) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            path = annotated_path(image)
        except PathEscape as exc:
            raise ValueError(f"Invalid image file: {image}") from exc
        return load_image_file(path)

    @classmethod
    def IS_CHANGED(cls, image: str) -> str:
        return file_sha256(annotated_path(image))

    @classmethod
    def VALIDATE_INPUTS(cls, image: str) -> bool | str:
        try:
            exists = annotated_path(image).is_file()
        except PathEscape:
            exists = False
        return True if exists else f"Invalid image file: {image}"


class ImageScale:
    upscale_methods = UPSCALE_METHODS
    crop_methods = CROP_METHODS

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "upscale_method": (cls.upscale_methods,),
                "width": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
                "height": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
                "crop": (cls.crop_methods,),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    CATEGORY = "image/upscaling"

    def upscale(self, image: torch.Tensor, upscale_method: str, width: int, height: int, crop: str) -> tuple[torch.Tensor]:
        if width == 0 and height == 0:
            return (image,)
        samples = image.movedim(-1, 1)
        if width == 0:
            width = max(1, round(samples.shape[3] * height / samples.shape[2]))
        elif height == 0:
            height = max(1, round(samples.shape[2] * width / samples.shape[3]))
        return (common_upscale(samples, width, height, upscale_method, crop).movedim(1, -1),)


class ImageScaleBy:
    upscale_methods = UPSCALE_METHODS

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "upscale_method": (cls.upscale_methods,),
                "scale_by": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    CATEGORY = "image/upscaling"

    def upscale(self, image: torch.Tensor, upscale_method: str, scale_by: float) -> tuple[torch.Tensor]:
        samples = image.movedim(-1, 1)
        # At least one pixel: ComfyUI fails on e.g. an 8-pixel image scaled by 0.01.
        width = max(1, round(samples.shape[3] * scale_by))
        height = max(1, round(samples.shape[2] * scale_by))
        return (common_upscale(samples, width, height, upscale_method, "disabled").movedim(1, -1),)


class ImageInvert:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "invert"
    CATEGORY = "image"

    def invert(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (1.0 - image,)


class EmptyImage:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "width": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
                "height": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
                "color": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "generate"
    CATEGORY = "image"

    def generate(self, width: int, height: int, batch_size: int = 1, color: int = 0) -> tuple[torch.Tensor]:
        rgb = [((color >> shift) & 0xFF) / 0xFF for shift in (16, 8, 0)]
        # Filled in numpy and wrapped once: each torch call lets the GIL go, and a tiny image
        # would spend more on those hand-offs to the server's event loop than on the pixels.
        pixels = np.empty((batch_size, height, width, 3), dtype=np.float32)
        pixels[...] = rgb
        return (torch.from_numpy(pixels),)


NODE_CLASS_MAPPINGS = {
    "SaveImage": SaveImage,
    "PreviewImage": PreviewImage,
    "LoadImage": LoadImage,
    "ImageScale": ImageScale,
    "ImageScaleBy": ImageScaleBy,
    "ImageInvert": ImageInvert,
    "EmptyImage": EmptyImage,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "SaveImage": "Save Image",
    "PreviewImage": "Preview Image",
    "LoadImage": "Load Image",
    "ImageScale": "Upscale Image",
    "ImageScaleBy": "Upscale Image By",
    "ImageInvert": "Invert Image",
}
