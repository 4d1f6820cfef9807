"""ComfyUI's latent nodes that need no model: an empty latent batch to sample into, and
saving/loading latents as `.latent` files.

LATENT values are dicts, as in ComfyUI: `{"samples": tensor [B, 4, H/8, W/8]}` plus optional
keys (`noise_mask`, `batch_index`) that other latent nodes add.

A `.latent` file is safetensors with `latent_tensor` (the samples, raw VAE space) and an empty
`latent_format_version_0` marker; files without the marker are from before ComfyUI stored raw
VAE-space values and are scaled by 1/0.18215 on load. The header metadata carries the prompt
(and extra_pnginfo entries) as JSON text, as ComfyUI writes it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from comfyserve import runtime
from comfyserve.paths import PathEscape
from comfyserve.save_path import COUNTERS, get_save_image_path
from nodes import MAX_RESOLUTION
from nodes.image import annotated_path

# SD1.x/SDXL latents: 4 channels, 8× smaller than the image on each side.
LATENT_CHANNELS = 4
LATENT_SCALE = 8


class EmptyLatentImage:
    DESCRIPTION = "Create a new batch of empty latent images to be denoised via sampling."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "width": ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8,
                                  "tooltip": "The width of the latent images in pixels."}),
                "height": ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8,
                                   "tooltip": "The height of the latent images in pixels."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096,
                                       "tooltip": "The number of latent images in the batch."}),
            }
        }

    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The empty latent image batch.",)
    FUNCTION = "generate"
    CATEGORY = "latent"

    def generate(self, width: int, height: int, batch_size: int = 1) -> tuple[dict[str, torch.Tensor]]:
        shape = (batch_size, LATENT_CHANNELS, height // LATENT_SCALE, width // LATENT_SCALE)
        return ({"samples": torch.zeros(shape)},)


class SaveLatent:
    def __init__(self) -> None:
        self.output_dir = str(runtime.folders().output)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples": ("LATENT",), "filename_prefix": ("STRING", {"default": "latents/ComfyUI"})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = "_for_testing"

    def save(self, samples: dict[str, Any], filename_prefix: str = "ComfyUI", prompt: Any = None,
             extra_pnginfo: Any = None) -> dict[str, Any]:
        from safetensors.torch import save_file

        folder, stem, counter, subfolder, _ = get_save_image_path(filename_prefix, self.output_dir)
        metadata = None
        if not runtime.settings().disable_metadata:
            metadata = {"prompt": json.dumps(prompt) if prompt is not None else ""}
            for key, value in (extra_pnginfo or {}).items():
                metadata[key] = json.dumps(value)
        filename = f"{stem}_{counter:05}_.latent"
        tensors = {"latent_tensor": samples["samples"].contiguous(), "latent_format_version_0": torch.tensor([])}
        save_file(tensors, os.path.join(folder, filename), metadata=metadata)
        COUNTERS.saved(Path(folder), stem, [filename], counter)
        return {"ui": {"latents": [{"filename": filename, "subfolder": subfolder, "type": "output"}]}}


def _latent_path(latent: str):
    try:
        return annotated_path(latent)
    except PathEscape as exc:
        raise ValueError(f"Invalid latent file: {latent}") from exc


class LoadLatent:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        folder = runtime.folders().input
        try:
            names = [e.name for e in os.scandir(folder) if e.is_file() and e.name.endswith(".latent")]
        except FileNotFoundError:
            names = []
        return {"required": {"latent": [sorted(names)]}}

    CATEGORY = "_for_testing"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "load"

    def load(self, latent: str) -> tuple[dict[str, torch.Tensor]]:
        from safetensors.torch import load_file

        data = load_file(str(_latent_path(latent)), device="cpu")
        multiplier = 1.0 if "latent_format_version_0" in data else 1.0 / 0.18215
        return ({"samples": data["latent_tensor"].float() * multiplier},)

    @classmethod
    def IS_CHANGED(cls, latent: str) -> str:
        digest = hashlib.sha256()
        with open(_latent_path(latent), "rb") as handle:
            digest.update(handle.read())
        return digest.digest().hex()

    @classmethod
    def VALIDATE_INPUTS(cls, latent: str) -> bool | str:
        try:
            exists = annotated_path(latent).is_file()
        except PathEscape:
            exists = False
        return True if exists else f"Invalid latent file: {latent}"


NODE_CLASS_MAPPINGS = {"EmptyLatentImage": EmptyLatentImage, "SaveLatent": SaveLatent, "LoadLatent": LoadLatent}
NODE_DISPLAY_NAME_MAPPINGS = {"EmptyLatentImage": "Empty Latent Image"}
