"""ComfyUI's latent transforms: upscale (incl. bislerp), batch picks and repeats, composite,
blend, crop, flip, rotate and the noise mask for inpainting.

LATENT values are dicts `{"samples": [B,4,h,w], "noise_mask"?, "batch_index"?}`; every node
returns a new dict and never edits its input (cached outputs are shared).
"""

from __future__ import annotations

from typing import Any

import torch

from nodes import MAX_RESOLUTION
from nodes.image import CROP_METHODS, center_crop
from nodes.image import common_upscale as image_upscale

Latent = dict[str, Any]
LATENT_UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
PIXELS = {"min": 0, "max": MAX_RESOLUTION, "step": 8}


# -- bislerp ----------------------------------------------------------------------------------
def _slerp(a: torch.Tensor, b: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of rows of a and b [N,C] by ratio [N,1]; lengths interpolate
    linearly. Nearly equal directions keep `a`, opposite ones fall back to a linear mix."""
    channels = a.shape[-1]
    a_norm = torch.norm(a, dim=-1, keepdim=True)
    b_norm = torch.norm(b, dim=-1, keepdim=True)
    a_unit = a / a_norm
    b_unit = b / b_norm
    a_unit[a_norm.expand(-1, channels) == 0.0] = 0.0
    b_unit[b_norm.expand(-1, channels) == 0.0] = 0.0
    dot = (a_unit * b_unit).sum(1)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    r = ratio.squeeze(1)
    result = (torch.sin((1.0 - r) * omega) / sin_omega).unsqueeze(1) * a_unit
    result = result + (torch.sin(r * omega) / sin_omega).unsqueeze(1) * b_unit
    result = result * (a_norm * (1.0 - ratio) + b_norm * ratio).expand(-1, channels)
    same = dot > 1 - 1e-5
    opposite = dot < 1e-5 - 1
    result[same] = a[same]
    result[opposite] = (a * (1.0 - ratio) + b * ratio)[opposite]
    return result


def _resample_positions(old: int, new: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each of `new` output positions: the fractional ratio and the two source indices that
    bilinear resampling of `old` positions would blend."""
    first = torch.arange(old, dtype=torch.float32).reshape((1, 1, 1, -1))
    first = torch.nn.functional.interpolate(first, size=(1, new), mode="bilinear")
    ratios = first - first.floor()
    second = torch.arange(old, dtype=torch.float32).reshape((1, 1, 1, -1)) + 1
    second[:, :, :, -1] -= 1
    second = torch.nn.functional.interpolate(second, size=(1, new), mode="bilinear")
    return ratios, first.to(torch.int64), second.to(torch.int64)


def bislerp(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Resize [N,C,H,W] with slerp between neighbouring latent vectors, first along the width,
    then along the height (ComfyUI's `bislerp`)."""
    dtype = samples.dtype
    samples = samples.float()
    n, c, h, w = samples.shape
    ratios, left, right = _resample_positions(w, width)
    left, right = left.expand((n, c, h, -1)), right.expand((n, c, h, -1))
    ratios = ratios.expand((n, 1, h, -1))
    result = _slerp(
        samples.gather(-1, left).movedim(1, -1).reshape((-1, c)),
        samples.gather(-1, right).movedim(1, -1).reshape((-1, c)),
        ratios.movedim(1, -1).reshape((-1, 1)),
    ).reshape(n, h, width, c).movedim(-1, 1)
    ratios, top, bottom = _resample_positions(h, height)
    top = top.reshape((1, 1, -1, 1)).expand((n, c, -1, width))
    bottom = bottom.reshape((1, 1, -1, 1)).expand((n, c, -1, width))
    ratios = ratios.reshape((1, 1, -1, 1)).expand((n, 1, -1, width))
    result = _slerp(
        result.gather(-2, top).movedim(1, -1).reshape((-1, c)),
        result.gather(-2, bottom).movedim(1, -1).reshape((-1, c)),
        ratios.movedim(1, -1).reshape((-1, 1)),
    ).reshape(n, height, width, c).movedim(-1, 1)
    return result.to(dtype)


def common_upscale(samples: torch.Tensor, width: int, height: int, method: str, crop: str) -> torch.Tensor:
    if method == "bislerp":
        source = center_crop(samples, width, height) if crop == "center" else samples
        return bislerp(source, width, height)
    return image_upscale(samples, width, height, method, crop)


# -- nodes ------------------------------------------------------------------------------------
class LatentUpscale:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "samples": ("LATENT",),
                "upscale_method": (LATENT_UPSCALE_METHODS,),
                "width": ("INT", {"default": 512, **PIXELS}),
                "height": ("INT", {"default": 512, **PIXELS}),
                "crop": (CROP_METHODS,),
            }
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "upscale"
    CATEGORY = "latent"

    def upscale(self, samples: Latent, upscale_method: str, width: int, height: int, crop: str) -> tuple[Latent]:
        if width == 0 and height == 0:
            return (samples,)
        tensor = samples["samples"]
        if width == 0:
            height = max(64, height)
            width = max(64, round(tensor.shape[-1] * height / tensor.shape[-2]))
        elif height == 0:
            width = max(64, width)
            height = max(64, round(tensor.shape[-2] * width / tensor.shape[-1]))
        else:
            width, height = max(64, width), max(64, height)
        out = dict(samples)
        out["samples"] = common_upscale(tensor, width // 8, height // 8, upscale_method, crop)
        return (out,)


class LatentUpscaleBy:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "samples": ("LATENT",),
                "upscale_method": (LATENT_UPSCALE_METHODS,),
                "scale_by": ("FLOAT", {"default": 1.5, "min": 0.01, "max": 8.0, "step": 0.01}),
            }
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "upscale"
    CATEGORY = "latent"

    def upscale(self, samples: Latent, upscale_method: str, scale_by: float) -> tuple[Latent]:
        tensor = samples["samples"]
        width, height = round(tensor.shape[-1] * scale_by), round(tensor.shape[-2] * scale_by)
        out = dict(samples)
        out["samples"] = common_upscale(tensor, width, height, upscale_method, "disabled")
        return (out,)


def _repeat_to(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """A mask batch shorter than `batch` repeated to that length; a long enough one as is."""
    if tensor.shape[0] >= batch:
        return tensor
    repeats = -(-batch // tensor.shape[0])
    return tensor.repeat(repeats, *([1] * (tensor.ndim - 1)))[:batch]


class LatentFromBatch:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "samples": ("LATENT",),
                "batch_index": ("INT", {"default": 0, "min": 0, "max": 63}),
                "length": ("INT", {"default": 1, "min": 1, "max": 64}),
            }
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "frombatch"
    CATEGORY = "latent/batch"

    def frombatch(self, samples: Latent, batch_index: int, length: int) -> tuple[Latent]:
        out = dict(samples)
        tensor = samples["samples"]
        batch_index = min(tensor.shape[0] - 1, batch_index)
        length = min(tensor.shape[0] - batch_index, length)
        out["samples"] = tensor[batch_index : batch_index + length].clone()
        if "noise_mask" in samples:
            mask = samples["noise_mask"]
            if mask.shape[0] == 1:
                out["noise_mask"] = mask.clone()
            else:
                mask = _repeat_to(mask, tensor.shape[0])
                out["noise_mask"] = mask[batch_index : batch_index + length].clone()
        if "batch_index" not in out:
            out["batch_index"] = list(range(batch_index, batch_index + length))
        else:
            out["batch_index"] = samples["batch_index"][batch_index : batch_index + length]
        return (out,)


class RepeatLatentBatch:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples": ("LATENT",), "amount": ("INT", {"default": 1, "min": 1, "max": 64})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "repeat"
    CATEGORY = "latent/batch"

    def repeat(self, samples: Latent, amount: int) -> tuple[Latent]:
        out = dict(samples)
        tensor = samples["samples"]
        out["samples"] = tensor.repeat((amount, 1, 1, 1))
        if "noise_mask" in samples and samples["noise_mask"].shape[0] > 1:
            # ComfyUI repeats the mask batch as given (not first padded to the latent batch).
            out["noise_mask"] = samples["noise_mask"].repeat((amount, 1, 1, 1))
        if "batch_index" in out:
            offset = max(out["batch_index"]) - min(out["batch_index"]) + 1
            out["batch_index"] = out["batch_index"] + [x + i * offset for i in range(1, amount) for x in out["batch_index"]]
        return (out,)


class LatentComposite:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "samples_to": ("LATENT",),
                "samples_from": ("LATENT",),
                "x": ("INT", {"default": 0, **PIXELS}),
                "y": ("INT", {"default": 0, **PIXELS}),
                "feather": ("INT", {"default": 0, **PIXELS}),
            }
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "composite"
    CATEGORY = "latent"

    def composite(self, samples_to: Latent, samples_from: Latent, x: int, y: int, feather: int,
                  composite_method: str = "normal") -> tuple[Latent]:
        x, y, feather = x // 8, y // 8, feather // 8
        out = dict(samples_to)
        target = samples_to["samples"].clone()
        source = samples_from["samples"]
        height = min(source.shape[2], target.shape[2] - y)
        width = min(source.shape[3], target.shape[3] - x)
        if feather == 0:
            target[:, :, y : y + height, x : x + width] = source[:, :, :height, :width]
        else:
            source = source[:, :, :height, :width]
            mask = torch.ones_like(source)
            for t in range(feather):
                weight = (1.0 / feather) * (t + 1)
                if y != 0:
                    mask[:, :, t : 1 + t, :] *= weight
                if y + height < target.shape[2]:
                    mask[:, :, mask.shape[2] - 1 - t : mask.shape[2] - t, :] *= weight
                if x != 0:
                    mask[:, :, :, t : 1 + t] *= weight
                if x + width < target.shape[3]:
                    mask[:, :, :, mask.shape[3] - 1 - t : mask.shape[3] - t] *= weight
            region = target[:, :, y : y + height, x : x + width]
            target[:, :, y : y + height, x : x + width] = source * mask + region * (1.0 - mask)
        out["samples"] = target
        return (out,)


class LatentBlend:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "samples1": ("LATENT",),
                "samples2": ("LATENT",),
                "blend_factor": ("FLOAT", {"default": 0.5, "min": 0, "max": 1, "step": 0.01}),
            }
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "blend"
    CATEGORY = "_for_testing"

    def blend(self, samples1: Latent, samples2: Latent, blend_factor: float, blend_mode: str = "normal"):
        first, second = samples1["samples"], samples2["samples"]
        if first.shape != second.shape:
            second = common_upscale(second, first.shape[3], first.shape[2], "bicubic", "center")
        blended = first * blend_factor + second * (1 - blend_factor)
        out = dict(samples1)
        out["samples"] = blended
        return (out,)


class LatentCrop:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "samples": ("LATENT",),
                "width": ("INT", {"default": 512, "min": 64, "max": MAX_RESOLUTION, "step": 8}),
                "height": ("INT", {"default": 512, "min": 64, "max": MAX_RESOLUTION, "step": 8}),
                "x": ("INT", {"default": 0, **PIXELS}),
                "y": ("INT", {"default": 0, **PIXELS}),
            }
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "crop"
    CATEGORY = "latent/transform"

    def crop(self, samples: Latent, width: int, height: int, x: int, y: int) -> tuple[Latent]:
        out = dict(samples)
        tensor = samples["samples"]
        x, y = x // 8, y // 8
        # Keep at least 8 latent pixels (64 image pixels) inside the image, as ComfyUI does.
        if x > tensor.shape[3] - 8:
            x = tensor.shape[3] - 8
        if y > tensor.shape[2] - 8:
            y = tensor.shape[2] - 8
        new_height, new_width = height // 8, width // 8
        out["samples"] = tensor[:, :, y : y + new_height, x : x + new_width]
        return (out,)


class LatentFlip:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples": ("LATENT",), "flip_method": (["x-axis: vertically", "y-axis: horizontally"],)}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "flip"
    CATEGORY = "latent/transform"

    def flip(self, samples: Latent, flip_method: str) -> tuple[Latent]:
        out = dict(samples)
        if flip_method.startswith("x"):
            out["samples"] = torch.flip(samples["samples"], dims=[2])
        elif flip_method.startswith("y"):
            out["samples"] = torch.flip(samples["samples"], dims=[3])
        return (out,)


class LatentRotate:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples": ("LATENT",), "rotation": (["none", "90 degrees", "180 degrees", "270 degrees"],)}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "rotate"
    CATEGORY = "latent/transform"

    def rotate(self, samples: Latent, rotation: str) -> tuple[Latent]:
        turns = {"90": 1, "180": 2, "270": 3}.get(rotation.split(" ")[0], 0)
        out = dict(samples)
        out["samples"] = torch.rot90(samples["samples"], k=turns, dims=[3, 2])
        return (out,)


class SetLatentNoiseMask:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples": ("LATENT",), "mask": ("MASK",)}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "set_mask"
    CATEGORY = "latent/inpaint"

    def set_mask(self, samples: Latent, mask: torch.Tensor) -> tuple[Latent]:
        out = dict(samples)
        out["noise_mask"] = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
        return (out,)


NODE_CLASS_MAPPINGS = {
    "LatentUpscale": LatentUpscale,
    "LatentUpscaleBy": LatentUpscaleBy,
    "LatentFromBatch": LatentFromBatch,
    "RepeatLatentBatch": RepeatLatentBatch,
    "LatentComposite": LatentComposite,
    "LatentBlend": LatentBlend,
    "LatentCrop": LatentCrop,
    "LatentFlip": LatentFlip,
    "LatentRotate": LatentRotate,
    "SetLatentNoiseMask": SetLatentNoiseMask,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LatentUpscale": "Upscale Latent",
    "LatentUpscaleBy": "Upscale Latent By",
    "LatentFromBatch": "Latent From Batch",
    "RepeatLatentBatch": "Repeat Latent Batch",
    "LatentComposite": "Latent Composite",
    "LatentBlend": "Latent Blend",
    "LatentCrop": "Crop Latent",
    "LatentFlip": "Flip Latent",
    "LatentRotate": "Rotate Latent",
    "SetLatentNoiseMask": "Set Latent Noise Mask",
}
