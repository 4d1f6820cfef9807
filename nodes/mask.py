"""ComfyUI's mask nodes: image↔mask conversion, solid/invert/crop/composite/feather/grow/threshold,
and splitting/joining an image's alpha.

Formulas and `/object_info` entries are ComfyUI 0.8's (`comfy_extras.nodes_mask`,
`comfy_extras.nodes_compositing`). MASK tensors are float32 [batch, height,
width]; single-frame [height, width] masks are accepted and come back batched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nodes import MAX_RESOLUTION
from nodes._v3 import V3Node, combo

CHANNELS = ["red", "green", "blue", "alpha"]
MASK_OPERATIONS = ["multiply", "add", "subtract", "and", "or", "xor"]


def _int(default: int, low: int, high: int = MAX_RESOLUTION) -> tuple[str, dict[str, Any]]:
    return ("INT", {"default": default, "min": low, "max": high, "step": 1})


def batched(mask: torch.Tensor) -> torch.Tensor:
    """Any mask as [batch, height, width]."""
    return mask.reshape((-1, mask.shape[-2], mask.shape[-1]))


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A mask bilinearly resized to (height, width), as [batch, height, width]."""
    return F.interpolate(batched(mask).unsqueeze(1), size=size, mode="bilinear").squeeze(1)


def _morph_step(mask: np.ndarray, tapered: bool, grow: bool) -> np.ndarray:
    """One grey dilation (grow) or erosion over a 3×3 cross (tapered) or square, edges repeated.

    The same as scipy.ndimage.grey_dilation/grey_erosion with that footprint, which ComfyUI
    uses: for a 3×3 footprint their default 'reflect' border repeats the edge pixel.
    """
    padded = np.pad(mask, 1, mode="edge")
    height, width = mask.shape
    offsets = [(dy, dx) for dy in range(3) for dx in range(3) if not (tapered and dy != 1 and dx != 1)]
    shifted = np.stack([padded[dy:dy + height, dx:dx + width] for dy, dx in offsets])
    return shifted.max(axis=0) if grow else shifted.min(axis=0)


# -- comfy_extras.nodes_mask ---------------------------------------------------------------
class MaskToImage(V3Node):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"mask": ("MASK", {})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "mask_to_image"
    CATEGORY = "mask"

    def mask_to_image(self, mask: torch.Tensor) -> tuple[torch.Tensor]:
        return (batched(mask).unsqueeze(-1).expand(-1, -1, -1, 3),)


class ImageToMask(V3Node):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE", {}), "channel": combo(CHANNELS)}}

    RETURN_TYPES = ("MASK",)
    FUNCTION = "image_to_mask"
    CATEGORY = "mask"

    def image_to_mask(self, image: torch.Tensor, channel: str) -> tuple[torch.Tensor]:
        return (image[:, :, :, CHANNELS.index(channel)],)


class SolidMask(V3Node):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "value": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
                "width": _int(512, 1),
                "height": _int(512, 1),
            }
        }

    RETURN_TYPES = ("MASK",)
    FUNCTION = "solid"
    CATEGORY = "mask"

    def solid(self, value: float, width: int, height: int) -> tuple[torch.Tensor]:
        return (torch.full((1, height, width), value, dtype=torch.float32),)


class InvertMask(V3Node):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"mask": ("MASK", {})}}

    RETURN_TYPES = ("MASK",)
    FUNCTION = "invert"
    CATEGORY = "mask"

    def invert(self, mask: torch.Tensor) -> tuple[torch.Tensor]:
        return (1.0 - mask,)


class CropMask(V3Node):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "mask": ("MASK", {}),
                "x": _int(0, 0),
                "y": _int(0, 0),
                "width": _int(512, 1),
                "height": _int(512, 1),
            }
        }

    RETURN_TYPES = ("MASK",)
    FUNCTION = "crop"
    CATEGORY = "mask"

    def crop(self, mask: torch.Tensor, x: int, y: int, width: int, height: int) -> tuple[torch.Tensor]:
        return (batched(mask)[:, y:y + height, x:x + width],)


class MaskComposite(V3Node):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "destination": ("MASK", {}),
                "source": ("MASK", {}),
                "x": _int(0, 0),
                "y": _int(0, 0),
                "operation": combo(MASK_OPERATIONS),
            }
        }

    RETURN_TYPES = ("MASK",)
    FUNCTION = "combine"
    CATEGORY = "mask"

    def combine(
        self, destination: torch.Tensor, source: torch.Tensor, x: int, y: int, operation: str
    ) -> tuple[torch.Tensor]:
        output = batched(destination).clone()
        source = batched(source).to(output.device)
        right = min(x + source.shape[-1], output.shape[-1])
        bottom = min(y + source.shape[-2], output.shape[-2])
        if right <= x or bottom <= y:  # placed entirely outside (ComfyUI fails on a shape mismatch)
            return (torch.clamp(output, 0.0, 1.0),)
        top_part = source[:, : bottom - y, : right - x]
        under = output[:, y:bottom, x:right]
        if operation == "multiply":
            combined = under * top_part
        elif operation == "add":
            combined = under + top_part
        elif operation == "subtract":
            combined = under - top_part
        elif operation in ("and", "or", "xor"):
            # Logical operations see each mask rounded to 0 or 1.
            logic = {"and": torch.logical_and, "or": torch.logical_or, "xor": torch.logical_xor}[operation]
            combined = logic(under.round().bool(), top_part.round().bool()).float()
        else:
            raise ValueError(f"Unknown mask operation: {operation}")
        output[:, y:bottom, x:right] = combined
        return (torch.clamp(output, 0.0, 1.0),)


class FeatherMask(V3Node):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "mask": ("MASK", {}),
                "left": _int(0, 0),
                "top": _int(0, 0),
                "right": _int(0, 0),
                "bottom": _int(0, 0),
            }
        }

    RETURN_TYPES = ("MASK",)
    FUNCTION = "feather"
    CATEGORY = "mask"

    def feather(self, mask: torch.Tensor, left: int, top: int, right: int, bottom: int) -> tuple[torch.Tensor]:
        output = batched(mask).clone()
        height, width = output.shape[-2:]
        left, right = min(left, width), min(right, width)
        top, bottom = min(top, height), min(bottom, height)
        # Line k (counted from 0 at the edge) is scaled by (k + 1) / size.
        for k in range(left):
            output[:, :, k] *= (k + 1.0) / left
        for k in range(top):
            output[:, k, :] *= (k + 1) / top
        # ComfyUI 0.8 indexes the right and bottom edges as -k, so its first step (k = 0)
        # lands on column/row 0 and each later one on the line k from the far edge.
        for k in range(right):
            output[:, :, -k] *= (k + 1) / right
        for k in range(bottom):
            output[:, -k, :] *= (k + 1) / bottom
        return (output,)


class GrowMask(V3Node):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "mask": ("MASK", {}),
                "expand": _int(0, -MAX_RESOLUTION),
                "tapered_corners": ("BOOLEAN", {"default": True}),
            }
        }

    RETURN_TYPES = ("MASK",)
    FUNCTION = "expand_mask"
    CATEGORY = "mask"

    def expand_mask(self, mask: torch.Tensor, expand: int, tapered_corners: bool) -> tuple[torch.Tensor]:
        grown = []
        for item in batched(mask):
            values = item.cpu().numpy()
            for _ in range(abs(expand)):
                values = _morph_step(values, tapered_corners, grow=expand > 0)
            grown.append(torch.from_numpy(np.ascontiguousarray(values)))
        return (torch.stack(grown, dim=0),)


class ThresholdMask(V3Node):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "mask": ("MASK", {}),
                "value": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
            }
        }

    RETURN_TYPES = ("MASK",)
    FUNCTION = "threshold"
    CATEGORY = "mask"

    def threshold(self, mask: torch.Tensor, value: float) -> tuple[torch.Tensor]:
        return ((mask > value).float(),)


# -- comfy_extras.nodes_compositing --------------------------------------------------------
class SplitImageWithAlpha(V3Node):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_compositing"
    OUTPUT_TOOLTIPS = (None, None)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE", {})}}

    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "split_image_with_alpha"
    CATEGORY = "mask/compositing"

    def split_image_with_alpha(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = image[..., 3] if image.shape[-1] > 3 else torch.ones_like(image[..., 0])
        return image[..., :3], 1.0 - alpha


class JoinImageWithAlpha(V3Node):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_compositing"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE", {}), "alpha": ("MASK", {})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "join_image_with_alpha"
    CATEGORY = "mask/compositing"

    def join_image_with_alpha(self, image: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor]:
        count = min(len(image), len(alpha))  # the shorter batch decides
        opacity = 1.0 - resize_mask(alpha, (image.shape[1], image.shape[2]))
        return (torch.cat((image[:count, ..., :3], opacity[:count].unsqueeze(-1)), dim=-1),)


NODE_CLASS_MAPPINGS = {
    "MaskToImage": MaskToImage,
    "ImageToMask": ImageToMask,
    "SolidMask": SolidMask,
    "InvertMask": InvertMask,
    "CropMask": CropMask,
    "MaskComposite": MaskComposite,
    "FeatherMask": FeatherMask,
    "GrowMask": GrowMask,
    "ThresholdMask": ThresholdMask,
    "SplitImageWithAlpha": SplitImageWithAlpha,
    "JoinImageWithAlpha": JoinImageWithAlpha,
}

# None where ComfyUI's v3 schema gives no display name: /object_info then shows null.
NODE_DISPLAY_NAME_MAPPINGS = {
    "MaskToImage": "Convert Mask to Image",
    "ImageToMask": "Convert Image to Mask",
    "SolidMask": None,
    "InvertMask": None,
    "CropMask": None,
    "MaskComposite": None,
    "FeatherMask": None,
    "GrowMask": "Grow Mask",
    "ThresholdMask": None,
    "SplitImageWithAlpha": "Split Image with Alpha",
    "JoinImageWithAlpha": "Join Image with Alpha",
}
