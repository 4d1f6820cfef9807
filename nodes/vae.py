"""ComfyUI's VAE nodes: decode and encode (plain, tiled) and the inpainting encoder.

The VAE value does the work (comfyserve/models/vae.py); these nodes only unpack LATENT dicts
and apply ComfyUI's node-level arithmetic (tile sizes in pixels → latent units, the inpainting
mask's growth and the grey fill of the masked pixels).
"""

from __future__ import annotations

import math
from typing import Any

import torch


def _frames_as_batch(images: torch.Tensor) -> torch.Tensor:
    """A video VAE's [batch, frames, H, W, C] decode as IMAGE items; images pass as they are."""
    return images.reshape(-1, *images.shape[-3:]) if images.ndim == 5 else images


class VAEDecode:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples": ("LATENT", {"tooltip": "The latent to be decoded."}),
                             "vae": ("VAE", {"tooltip": "The VAE model used for decoding the latent."})}}

    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The decoded image.",)
    FUNCTION = "decode"
    CATEGORY = "latent"
    DESCRIPTION = "Decodes latent images back into pixel space images."

    def decode(self, vae: Any, samples: dict[str, Any]) -> tuple[torch.Tensor]:
        latent = samples["samples"]
        if getattr(latent, "is_nested", False):
            latent = latent.unbind()[0]
        return (_frames_as_batch(vae.decode(latent)),)


class VAEDecodeTiled:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "samples": ("LATENT",),
            "vae": ("VAE",),
            "tile_size": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 32}),
            "overlap": ("INT", {"default": 64, "min": 0, "max": 4096, "step": 32}),
            "temporal_size": ("INT", {"default": 64, "min": 8, "max": 4096, "step": 4,
                                      "tooltip": "Only used for video VAEs: Amount of frames to decode at a time."}),
            "temporal_overlap": ("INT", {"default": 8, "min": 4, "max": 4096, "step": 4,
                                         "tooltip": "Only used for video VAEs: Amount of frames to overlap."}),
        }}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"
    CATEGORY = "_for_testing"

    def decode(self, vae: Any, samples: dict[str, Any], tile_size: int, overlap: int = 64,
               temporal_size: int = 64, temporal_overlap: int = 8) -> tuple[torch.Tensor]:
        # Overlap may be at most a quarter of the tile; sizes are given in pixels.
        if tile_size < overlap * 4:
            overlap = tile_size // 4
        compression = vae.spacial_compression_decode()
        return (_frames_as_batch(vae.decode_tiled(samples["samples"], tile_x=tile_size // compression,
                                                  tile_y=tile_size // compression, overlap=overlap // compression)),)


class VAEEncode:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"pixels": ("IMAGE",), "vae": ("VAE",)}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"
    CATEGORY = "latent"

    def encode(self, vae: Any, pixels: torch.Tensor) -> tuple[dict[str, torch.Tensor]]:
        return ({"samples": vae.encode(pixels)},)


class VAEEncodeTiled:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "pixels": ("IMAGE",),
            "vae": ("VAE",),
            "tile_size": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 64}),
            "overlap": ("INT", {"default": 64, "min": 0, "max": 4096, "step": 32}),
            "temporal_size": ("INT", {"default": 64, "min": 8, "max": 4096, "step": 4,
                                      "tooltip": "Only used for video VAEs: Amount of frames to encode at a time."}),
            "temporal_overlap": ("INT", {"default": 8, "min": 4, "max": 4096, "step": 4,
                                         "tooltip": "Only used for video VAEs: Amount of frames to overlap."}),
        }}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"
    CATEGORY = "_for_testing"

    def encode(self, vae: Any, pixels: torch.Tensor, tile_size: int, overlap: int,
               temporal_size: int = 64, temporal_overlap: int = 8) -> tuple[dict[str, torch.Tensor]]:
        latent = vae.encode_tiled(pixels, tile_x=tile_size, tile_y=tile_size, overlap=overlap)
        return ({"samples": latent},)


class VAEEncodeForInpaint:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"pixels": ("IMAGE",), "vae": ("VAE",), "mask": ("MASK",),
                             "grow_mask_by": ("INT", {"default": 6, "min": 0, "max": 64, "step": 1})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"
    CATEGORY = "latent/inpaint"

    def encode(self, vae: Any, pixels: torch.Tensor, mask: torch.Tensor, grow_mask_by: int = 6) -> tuple[dict[str, torch.Tensor]]:
        ratio = vae.downscale_ratio
        height, width = pixels.shape[1], pixels.shape[2]
        crop_h, crop_w = (height // ratio) * ratio, (width // ratio) * ratio
        mask = torch.nn.functional.interpolate(mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]),
                                               size=(height, width), mode="bilinear")
        pixels = pixels.clone()
        if (crop_h, crop_w) != (height, width):
            top, left = (height % ratio) // 2, (width % ratio) // 2
            pixels = pixels[:, top:top + crop_h, left:left + crop_w, :]
            mask = mask[:, :, top:top + crop_h, left:left + crop_w]

        # Grow the (rounded) mask by a box filter so the latent mask covers the seams.
        if grow_mask_by == 0:
            grown = mask
        else:
            kernel = torch.ones((1, 1, grow_mask_by, grow_mask_by))
            padding = math.ceil((grow_mask_by - 1) / 2)
            grown = torch.clamp(torch.nn.functional.conv2d(mask.round(), kernel, padding=padding), 0, 1)

        # Masked pixels become mid grey before encoding.
        keep = (1.0 - mask.round()).squeeze(1)
        for channel in range(3):
            pixels[:, :, :, channel] -= 0.5
            pixels[:, :, :, channel] *= keep
            pixels[:, :, :, channel] += 0.5
        latent = vae.encode(pixels)
        return ({"samples": latent, "noise_mask": grown[:, :, :crop_h, :crop_w].round()},)


NODE_CLASS_MAPPINGS = {
    "VAEDecode": VAEDecode,
    "VAEEncode": VAEEncode,
    "VAEDecodeTiled": VAEDecodeTiled,
    "VAEEncodeTiled": VAEEncodeTiled,
    "VAEEncodeForInpaint": VAEEncodeForInpaint,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "VAEDecode": "VAE Decode",
    "VAEEncode": "VAE Encode",
    "VAEDecodeTiled": "VAE Decode (Tiled)",
    "VAEEncodeTiled": "VAE Encode (Tiled)",
    "VAEEncodeForInpaint": "VAE Encode (for Inpainting)",
}
