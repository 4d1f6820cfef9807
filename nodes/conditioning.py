"""ComfyUI's conditioning nodes: combine, average, concat, areas, masks, strength, timestep ranges.

CONDITIONING is ComfyUI's list of `[tensor, options]` pairs. These nodes only edit the list and
the options; what the options mean while sampling (areas in latent units, masks resized to the
latent, percentages turned into sigmas) lives in comfyserve/sampling/guidance.py.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from nodes import MAX_RESOLUTION

log = logging.getLogger(__name__)

Conditioning = list[list[Any]]
STRENGTH = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01})
PIXELS = {"min": 0, "max": MAX_RESOLUTION, "step": 8}


def set_values(conditioning: Conditioning, values: dict[str, Any]) -> Conditioning:
    """A copy of every pair with `values` set in its options (the tensors are shared)."""
    return [[tensor, {**options, **values}] for tensor, options in conditioning]


class ConditioningCombine:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning_1": ("CONDITIONING",), "conditioning_2": ("CONDITIONING",)}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "combine"
    CATEGORY = "conditioning"

    def combine(self, conditioning_1: Conditioning, conditioning_2: Conditioning) -> tuple[Conditioning]:
        return (conditioning_1 + conditioning_2,)


def _only_first(conditioning_from: Conditioning, node: str) -> None:
    if len(conditioning_from) > 1:
        log.warning("%s: conditioning_from holds %d conds; only the first one is used.", node, len(conditioning_from))


class ConditioningAverage:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "conditioning_to": ("CONDITIONING",),
                "conditioning_from": ("CONDITIONING",),
                "conditioning_to_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            }
        }

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "addWeighted"
    CATEGORY = "conditioning"

    def addWeighted(  # noqa: N802 - ComfyUI's FUNCTION name
        self, conditioning_to: Conditioning, conditioning_from: Conditioning, conditioning_to_strength: float
    ) -> tuple[Conditioning]:
        _only_first(conditioning_from, "ConditioningAverage")
        source = conditioning_from[0][0]
        pooled_from = conditioning_from[0][1].get("pooled_output")
        weight = conditioning_to_strength
        out = []
        for tensor, options in conditioning_to:
            # The source is cut or zero-padded to the target's token length.
            part = source[:, : tensor.shape[1]]
            if part.shape[1] < tensor.shape[1]:
                padding = torch.zeros((1, tensor.shape[1] - part.shape[1], tensor.shape[2]))
                part = torch.cat([part, padding], dim=1)
            mixed = tensor * weight + part * (1.0 - weight)
            new_options = dict(options)
            pooled_to = options.get("pooled_output", pooled_from)
            if pooled_from is not None and pooled_to is not None:
                new_options["pooled_output"] = pooled_to * weight + pooled_from * (1.0 - weight)
            elif pooled_from is not None:
                new_options["pooled_output"] = pooled_from
            out.append([mixed, new_options])
        return (out,)


class ConditioningConcat:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning_to": ("CONDITIONING",), "conditioning_from": ("CONDITIONING",)}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "concat"
    CATEGORY = "conditioning"

    def concat(self, conditioning_to: Conditioning, conditioning_from: Conditioning) -> tuple[Conditioning]:
        _only_first(conditioning_from, "ConditioningConcat")
        source = conditioning_from[0][0]
        return ([[torch.cat((tensor, source), 1), dict(options)] for tensor, options in conditioning_to],)


class ConditioningSetArea:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "conditioning": ("CONDITIONING",),
                "width": ("INT", {"default": 64, "min": 64, "max": MAX_RESOLUTION, "step": 8}),
                "height": ("INT", {"default": 64, "min": 64, "max": MAX_RESOLUTION, "step": 8}),
                "x": ("INT", {"default": 0, **PIXELS}),
                "y": ("INT", {"default": 0, **PIXELS}),
                "strength": STRENGTH,
            }
        }

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"
    CATEGORY = "conditioning"

    def append(self, conditioning: Conditioning, width: int, height: int, x: int, y: int, strength: float):
        # ComfyUI's area: (height, width, y, x) in latent units (pixels // 8).
        area = (height // 8, width // 8, y // 8, x // 8)
        return (set_values(conditioning, {"area": area, "strength": strength, "set_area_to_bounds": False}),)


class ConditioningSetAreaPercentage:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        fraction = {"min": 0, "max": 1.0, "step": 0.01}
        return {
            "required": {
                "conditioning": ("CONDITIONING",),
                "width": ("FLOAT", {"default": 1.0, **fraction}),
                "height": ("FLOAT", {"default": 1.0, **fraction}),
                "x": ("FLOAT", {"default": 0, **fraction}),
                "y": ("FLOAT", {"default": 0, **fraction}),
                "strength": STRENGTH,
            }
        }

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"
    CATEGORY = "conditioning"

    def append(self, conditioning: Conditioning, width: float, height: float, x: float, y: float, strength: float):
        area = ("percentage", height, width, y, x)
        return (set_values(conditioning, {"area": area, "strength": strength, "set_area_to_bounds": False}),)


class ConditioningSetAreaStrength:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning": ("CONDITIONING",), "strength": STRENGTH}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"
    CATEGORY = "conditioning"

    def append(self, conditioning: Conditioning, strength: float) -> tuple[Conditioning]:
        return (set_values(conditioning, {"strength": strength}),)


class ConditioningSetMask:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "conditioning": ("CONDITIONING",),
                "mask": ("MASK",),
                "strength": STRENGTH,
                "set_cond_area": (["default", "mask bounds"],),
            }
        }

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"
    CATEGORY = "conditioning"

    def append(self, conditioning: Conditioning, mask: torch.Tensor, set_cond_area: str, strength: float):
        if mask.ndim < 3:
            mask = mask.unsqueeze(0)
        values = {"mask": mask, "set_area_to_bounds": set_cond_area != "default", "mask_strength": strength}
        return (set_values(conditioning, values),)


class ConditioningZeroOut:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning": ("CONDITIONING",)}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "zero_out"
    CATEGORY = "advanced/conditioning"

    def zero_out(self, conditioning: Conditioning) -> tuple[Conditioning]:
        out = []
        for tensor, options in conditioning:
            new_options = dict(options)
            for key in ("pooled_output", "conditioning_lyrics"):
                if options.get(key) is not None:
                    new_options[key] = torch.zeros_like(options[key])
            out.append([torch.zeros_like(tensor), new_options])
        return (out,)


class ConditioningSetTimestepRange:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        fraction = {"min": 0.0, "max": 1.0, "step": 0.001}
        return {
            "required": {
                "conditioning": ("CONDITIONING",),
                "start": ("FLOAT", {"default": 0.0, **fraction}),
                "end": ("FLOAT", {"default": 1.0, **fraction}),
            }
        }

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "set_range"
    CATEGORY = "advanced/conditioning"

    def set_range(self, conditioning: Conditioning, start: float, end: float) -> tuple[Conditioning]:
        return (set_values(conditioning, {"start_percent": start, "end_percent": end}),)


NODE_CLASS_MAPPINGS = {
    "ConditioningCombine": ConditioningCombine,
    "ConditioningAverage": ConditioningAverage,
    "ConditioningConcat": ConditioningConcat,
    "ConditioningSetArea": ConditioningSetArea,
    "ConditioningSetAreaPercentage": ConditioningSetAreaPercentage,
    "ConditioningSetAreaStrength": ConditioningSetAreaStrength,
    "ConditioningSetMask": ConditioningSetMask,
    "ConditioningZeroOut": ConditioningZeroOut,
    "ConditioningSetTimestepRange": ConditioningSetTimestepRange,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ConditioningCombine": "Conditioning (Combine)",
    "ConditioningConcat": "Conditioning (Concat)",
    "ConditioningSetArea": "Conditioning (Set Area)",
    "ConditioningSetAreaPercentage": "Conditioning (Set Area with Percentage)",
    "ConditioningSetMask": "Conditioning (Set Mask)",
}
