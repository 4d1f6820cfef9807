"""ComfyUI's text-encoding nodes: CLIPTextEncode, CLIPSetLastLayer and the SDXL encoders.

They only drive the CLIP object (comfyserve/text): tokenize, encode, wrap as CONDITIONING
`[[cond, {"pooled_output": pooled, ...}]]`. The SDXL nodes add the size keys the SDXL UNet's
ADM vector is built from (`width`, `height`, `crop_w`, `crop_h`, `target_width`,
`target_height`; the refiner `aesthetic_score`, `width`, `height`), named as ComfyUI names them.
"""

from __future__ import annotations

from typing import Any

from nodes import MAX_RESOLUTION
from nodes._v3 import V3Node

NO_CLIP = ("ERROR: clip input is invalid: None\n\nIf the clip is from a checkpoint loader node your checkpoint "
           "does not contain a valid clip or text encoder model.")
PROMPT = ("STRING", {"multiline": True, "dynamicPrompts": True})


def _size(default: int) -> tuple[str, dict[str, int]]:
    return ("INT", {"default": default, "min": 0, "max": MAX_RESOLUTION})


class CLIPTextEncode:
    DESCRIPTION = ("Encodes a text prompt using a CLIP model into an embedding that can be used to guide the "
                   "diffusion model towards generating specific images.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "text": ("STRING", {"multiline": True, "dynamicPrompts": True,
                                    "tooltip": "The text to be encoded."}),
                "clip": ("CLIP", {"tooltip": "The CLIP model used for encoding the text."}),
            }
        }

    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("A conditioning containing the embedded text used to guide the diffusion model.",)
    FUNCTION = "encode"
    CATEGORY = "conditioning"

    def encode(self, clip: Any, text: str) -> tuple[list]:
        if clip is None:
            raise RuntimeError(NO_CLIP)
        return (clip.encode_from_tokens_scheduled(clip.tokenize(text)),)


class CLIPSetLastLayer:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "clip": ("CLIP",),
                "stop_at_clip_layer": ("INT", {"default": -1, "min": -24, "max": -1, "step": 1}),
            }
        }

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "set_last_layer"
    CATEGORY = "conditioning"

    def set_last_layer(self, clip: Any, stop_at_clip_layer: int) -> tuple[Any]:
        clip = clip.clone()
        clip.clip_layer(stop_at_clip_layer)
        return (clip,)


class CLIPTextEncodeSDXLRefiner(V3Node):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_clip_sdxl"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "ascore": ("FLOAT", {"default": 6.0, "min": 0.0, "max": 1000.0, "step": 0.01}),
                "width": _size(1024),
                "height": _size(1024),
                "text": PROMPT,
                "clip": ("CLIP", {}),
            }
        }

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "execute"
    CATEGORY = "advanced/conditioning"

    def execute(self, clip: Any, ascore: float, width: int, height: int, text: str) -> tuple[list]:
        tokens = clip.tokenize(text)
        return (clip.encode_from_tokens_scheduled(
            tokens, add_dict={"aesthetic_score": ascore, "width": width, "height": height}),)


class CLIPTextEncodeSDXL(V3Node):
    RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_clip_sdxl"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "clip": ("CLIP", {}),
                "width": _size(1024),
                "height": _size(1024),
                "crop_w": _size(0),
                "crop_h": _size(0),
                "target_width": _size(1024),
                "target_height": _size(1024),
                "text_g": PROMPT,
                "text_l": PROMPT,
            }
        }

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "execute"
    CATEGORY = "advanced/conditioning"

    def execute(self, clip: Any, width: int, height: int, crop_w: int, crop_h: int, target_width: int,
                target_height: int, text_g: str, text_l: str) -> tuple[list]:
        tokens = clip.tokenize(text_g)
        tokens["l"] = clip.tokenize(text_l)["l"]
        if len(tokens["l"]) != len(tokens["g"]):
            # Equal chunk counts: the shorter prompt is extended with empty-prompt chunks.
            empty = clip.tokenize("")
            while len(tokens["l"]) < len(tokens["g"]):
                tokens["l"] += empty["l"]
            while len(tokens["l"]) > len(tokens["g"]):
                tokens["g"] += empty["g"]
        return (clip.encode_from_tokens_scheduled(tokens, add_dict={
            "width": width, "height": height, "crop_w": crop_w, "crop_h": crop_h,
            "target_width": target_width, "target_height": target_height}),)


NODE_CLASS_MAPPINGS = {
    "CLIPTextEncode": CLIPTextEncode,
    "CLIPSetLastLayer": CLIPSetLastLayer,
    "CLIPTextEncodeSDXLRefiner": CLIPTextEncodeSDXLRefiner,
    "CLIPTextEncodeSDXL": CLIPTextEncodeSDXL,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CLIPTextEncode": "CLIP Text Encode (Prompt)",
    "CLIPSetLastLayer": "CLIP Set Last Layer",
    "CLIPTextEncodeSDXLRefiner": None,
    "CLIPTextEncodeSDXL": None,
}
