"""LoRA files → weight patches for a MODEL and a CLIP, as ComfyUI maps and applies them.

Names understood, per patched weight: kohya (`lora_unet_<module>`, `lora_te_…` / `lora_te1_…` /
`lora_te2_…`, with `.lora_up` / `.lora_down` / `.alpha` / `.lora_mid`), diffusers
(`<module>.lora.up` / `.lora.down`, `lora_linear_layer`) and PEFT (`unet.<module>.lora_B` /
`.lora_A`, `text_encoder.…`). Each becomes `(alpha / rank) · up @ down`, added to the weight
times the node's strength in float32 on a clone (models.diffusion.calculate_weight). Keys the
file has but nothing uses are logged, as ComfyUI's "lora key not loaded" warning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from comfyserve.models.diffusion import LowRankPatch
from comfyserve.models.files import load_state_dict

log = logging.getLogger(__name__)

# (up, down) tensor name pairs after a module's name, by convention.
UP_DOWN_NAMES = (
    ("lora_up.weight", "lora_down.weight"),      # kohya
    ("lora_B.weight", "lora_A.weight"),          # PEFT
    ("lora.up.weight", "lora.down.weight"),      # diffusers (old)
    ("lora_linear_layer.up.weight", "lora_linear_layer.down.weight"),
)
# Text encoder name prefixes LoRA files use, per encoder of a CLIP object.
TEXT_ENCODER_PREFIXES = {
    "clip_l": ("lora_te_", "lora_te1_", "text_encoder."),
    "clip_h": ("lora_te_", "text_encoder."),
    "clip_g": ("lora_te2_", "lora_te_", "text_encoder_2."),
}


def clip_key_map(clip: Any) -> dict[str, str]:
    """LoRA module names → the CLIP weight (ComfyUI's name) they patch.

    An SDXL CLIP has clip_l and clip_g: `lora_te1_`/`text_encoder.` mean clip_l and
    `lora_te2_`/`text_encoder_2.` clip_g there; a single-encoder CLIP takes `lora_te_`."""
    keys = clip.weight_keys()
    encoders = {key.split(".", 1)[0] for key in keys}
    out: dict[str, str] = {}
    for key in keys:
        if not key.endswith(".weight"):
            continue
        encoder, rest = key.split(".transformer.", 1)
        stem = rest[: -len(".weight")]  # text_model.encoder.layers.0.self_attn.q_proj
        for prefix in TEXT_ENCODER_PREFIXES.get(encoder, ()):
            if prefix == "lora_te_" and len(encoders) > 1 and encoder == "clip_g":
                continue
            if prefix.endswith("."):
                out[f"{prefix}{stem}"] = key
            else:
                out[f"{prefix}{stem.replace('.', '_')}"] = key
    return out


def _alpha(lora: Mapping[str, torch.Tensor], name: str) -> float | None:
    value = lora.get(f"{name}.alpha")
    return float(value) if value is not None else None


def patches_for(lora: Mapping[str, torch.Tensor], key_map: Mapping[str, str]) -> tuple[dict[str, Any], set[str]]:
    """(weight key → patch, the LoRA tensor names used)."""
    patches: dict[str, Any] = {}
    used: set[str] = set()
    for name, target in key_map.items():
        for up_name, down_name in UP_DOWN_NAMES:
            up, down = lora.get(f"{name}.{up_name}"), lora.get(f"{name}.{down_name}")
            if up is None or down is None:
                continue
            mid_name = f"{name}.lora_mid.weight"
            mid = lora.get(mid_name)
            patches[target] = LowRankPatch(up, down, _alpha(lora, name), mid)
            used.update({f"{name}.{up_name}", f"{name}.{down_name}"})
            used.update(n for n in (f"{name}.alpha", mid_name) if n in lora)
            break
    return patches, used


def load_lora(path: Path | str) -> dict[str, torch.Tensor]:
    return load_state_dict(path)


def apply_lora(model: Any, clip: Any, lora: Mapping[str, torch.Tensor], strength_model: float,
               strength_clip: float) -> tuple[Any, Any]:
    """Clones of `model` and `clip` with the LoRA's patches queued at the given strengths."""
    used: set[str] = set()
    new_model, new_clip = model, clip
    if model is not None:
        patches, model_used = patches_for(lora, model.lora_key_map())
        new_model = model.clone()
        new_model.add_patches(patches, strength_model)
        used |= model_used
    if clip is not None:
        patches, clip_used = patches_for(lora, clip_key_map(clip))
        new_clip = clip.clone()
        new_clip.add_patches(patches, strength_clip)
        used |= clip_used
    for name in sorted(set(lora) - used):
        log.warning("lora key not loaded: %s", name)
    return new_model, new_clip
