"""LoraLoader and LoraLoaderModelOnly: ComfyUI's LoRA nodes (the mapping is comfyserve.models.lora).

The patches go onto clones, so the checkpoint's cached MODEL and CLIP stay as loaded: a later
prompt without the LoRA gets the plain weights back.
"""

from __future__ import annotations

from typing import Any

from nodes.loaders import filename_list, full_path_or_raise

LORA_DESCRIPTION = ("LoRAs are used to modify diffusion and CLIP models, altering the way in which latents are "
                    "denoised such as applying styles. Multiple LoRA nodes can be linked together.")
STRENGTH = {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}


def _load(lora_name: str) -> dict:
    from comfyserve.models.cache import MODELS
    from comfyserve.models.lora import load_lora

    path = full_path_or_raise("loras", lora_name)
    return MODELS.get("lora", path, lambda: load_lora(path))


class LoraLoader:
    DESCRIPTION = LORA_DESCRIPTION

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The diffusion model the LoRA will be applied to."}),
                "clip": ("CLIP", {"tooltip": "The CLIP model the LoRA will be applied to."}),
                "lora_name": (filename_list("loras"), {"tooltip": "The name of the LoRA."}),
                "strength_model": ("FLOAT", {**STRENGTH, "tooltip": "How strongly to modify the diffusion model. This value can be negative."}),
                "strength_clip": ("FLOAT", {**STRENGTH, "tooltip": "How strongly to modify the CLIP model. This value can be negative."}),
            }
        }

    RETURN_TYPES = ("MODEL", "CLIP")
    OUTPUT_TOOLTIPS = ("The modified diffusion model.", "The modified CLIP model.")
    FUNCTION = "load_lora"
    CATEGORY = "loaders"

    def load_lora(self, model: Any, clip: Any, lora_name: str, strength_model: float,
                  strength_clip: float) -> tuple[Any, Any]:
        if strength_model == 0 and strength_clip == 0:
            return (model, clip)
        from comfyserve.models.lora import apply_lora

        return apply_lora(model, clip, _load(lora_name), strength_model, strength_clip)


class LoraLoaderModelOnly(LoraLoader):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL",),
                "lora_name": (filename_list("loras"),),
                "strength_model": ("FLOAT", STRENGTH),
            }
        }

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_lora_model_only"

    def load_lora_model_only(self, model: Any, lora_name: str, strength_model: float) -> tuple[Any]:
        if strength_model == 0:
            return (model,)
        from comfyserve.models.lora import apply_lora

        return (apply_lora(model, None, _load(lora_name), strength_model, 0)[0],)


NODE_CLASS_MAPPINGS = {"LoraLoader": LoraLoader, "LoraLoaderModelOnly": LoraLoaderModelOnly}
NODE_DISPLAY_NAME_MAPPINGS = {"LoraLoader": "Load LoRA"}
