"""ComfyUI's latent nodes that need no model: an empty latent batch to sample into.

LATENT values are dicts, as in ComfyUI: `{"samples": tensor [B, 4, H/8, W/8]}` plus optional
keys (`noise_mask`, `batch_index`) that other latent nodes add.
"""

from __future__ import annotations

from typing import Any

import torch

from nodes import MAX_RESOLUTION

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


NODE_CLASS_MAPPINGS = {"EmptyLatentImage": EmptyLatentImage}
NODE_DISPLAY_NAME_MAPPINGS = {"EmptyLatentImage": "Empty Latent Image"}
