"""Text-encoder state dicts: cut out of checkpoints, converted to transformers' CLIP layout,
and their configuration read off the tensor shapes.

Checkpoint prefixes (`split_text_encoders`):

| checkpoint keys | encoder | layout after stripping the prefix |
|---|---|---|
| `cond_stage_model.transformer.` (SD1) | `clip_l` | HF `text_model.*` (old files without `text_model.` get it added) |
| `cond_stage_model.model.` (SD2) | `clip_h` | OpenCLIP `transformer.resblocks.*`, `token_embedding.weight`, ... |
| `conditioner.embedders.0.transformer.` (SDXL) | `clip_l` | HF `text_model.*` |
| `conditioner.embedders.1.model.` (SDXL) | `clip_g` | OpenCLIP |
| `conditioner.embedders.0.model.` (SDXL refiner; SD2 in sgm layout) | `clip_g` if 1280 wide, else `clip_h` | OpenCLIP |

`to_transformers_layout` accepts any of: HF (`text_model.*` + optional `text_projection.weight`),
the same under `transformer.` (ComfyUI's internal names), or OpenCLIP (`transformer.resblocks.*`,
`token_embedding.weight`, `positional_embedding`, `ln_final.*`, `text_projection` [width, proj],
`logit_scale`), and returns HF keys. OpenCLIP's fused `attn.in_proj_{weight,bias}` is split into
q/k/v thirds and `text_projection` is transposed into a Linear weight, as ComfyUI converts them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

StateDict = dict[str, torch.Tensor]

HEAD_WIDTH = 64  # CLIP-L, OpenCLIP-H and -bigG all use 64-wide attention heads

# (checkpoint prefix, encoder name or None = decide by width)
CHECKPOINT_PREFIXES: tuple[tuple[str, str | None], ...] = (
    ("conditioner.embedders.0.transformer.", "clip_l"),
    ("conditioner.embedders.1.model.", "clip_g"),
    ("conditioner.embedders.0.model.", None),
    ("cond_stage_model.transformer.", "clip_l"),
    ("cond_stage_model.model.", "clip_h"),
)

# Which family the set of encoders in a checkpoint means.
FAMILY_ENCODERS: dict[str, tuple[str, ...]] = {
    "sd1": ("clip_l",),
    "sd2": ("clip_h",),
    "sdxl": ("clip_l", "clip_g"),
    "sdxl_refiner": ("clip_g",),
}

# Keys that carry nothing the encoder computes with.
_IGNORED = ("text_model.embeddings.position_ids", "logit_scale", "attn_mask")

_RESBLOCK_PARTS = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
    "attn.out_proj": "self_attn.out_proj",
}
_LAYER_RE = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.")


def split_text_encoders(state_dict: dict[str, Any], family: str | None = None) -> dict[str, StateDict]:
    """The text encoders in a checkpoint, by name (`clip_l`, `clip_h`, `clip_g`), each with its
    checkpoint prefix removed (layouts in the module docstring). `family` (if known from the
    UNet) settles the one ambiguous prefix; otherwise the width does."""
    found: dict[str, StateDict] = {}
    for key, value in state_dict.items():
        for prefix, _name in CHECKPOINT_PREFIXES:
            if key.startswith(prefix):
                found.setdefault(prefix, {})[key[len(prefix):]] = value
                break
    out: dict[str, StateDict] = {}
    for prefix, name in CHECKPOINT_PREFIXES:
        part = found.get(prefix)
        if not part:
            continue
        if name is None:
            if family == "sd2":
                name = "clip_h"
            elif family in ("sdxl", "sdxl_refiner"):
                name = "clip_g"
            else:
                name = "clip_g" if _width(part) == 1280 else "clip_h"
        if name == "clip_l" and not any(k.startswith("text_model.") for k in part):
            part = {f"text_model.{k}": v for k, v in part.items()}
        out[name] = part
    return out


def family_of(encoders: dict[str, Any]) -> str | None:
    """The model family a set of encoder names belongs to (None if it matches none)."""
    names = set(encoders)
    for family, needed in FAMILY_ENCODERS.items():
        if names == set(needed):
            return family
    return None


def _width(sd: dict[str, Any]) -> int | None:
    for key in ("token_embedding.weight", "text_model.embeddings.token_embedding.weight",
                "transformer.text_model.embeddings.token_embedding.weight"):
        if key in sd:
            return int(sd[key].shape[1])
    return None


def is_openclip(sd: dict[str, Any]) -> bool:
    return any(k.startswith("transformer.resblocks.") for k in sd) or "token_embedding.weight" in sd


def to_transformers_layout(sd: dict[str, Any]) -> StateDict:
    """`sd` in transformers' CLIPTextModel(WithProjection) key layout (see module docstring)."""
    if is_openclip(sd):
        return _from_openclip(sd)
    out: StateDict = {}
    for key, value in sd.items():
        if key.startswith("transformer.text_model.") or key == "transformer.text_projection.weight":
            key = key[len("transformer."):]
        if key in _IGNORED or key.endswith(".position_ids"):
            continue
        if key == "text_projection" and value.ndim == 2:  # a bare matrix, OpenCLIP orientation
            out["text_projection.weight"] = value.t().contiguous()
            continue
        out[key] = value
    return out


def _from_openclip(sd: dict[str, Any]) -> StateDict:
    out: StateDict = {}
    direct = {
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "ln_final.weight": "text_model.final_layer_norm.weight",
        "ln_final.bias": "text_model.final_layer_norm.bias",
    }
    for key, value in sd.items():
        if key in direct:
            out[direct[key]] = value
        elif key == "text_projection":
            out["text_projection.weight"] = value.t().contiguous()
        elif key == "text_projection.weight":
            out[key] = value
        elif key.startswith("transformer.resblocks."):
            rest = key[len("transformer.resblocks."):]
            index, _, part = rest.partition(".")
            target = f"text_model.encoder.layers.{index}."
            if part in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = "weight" if part.endswith("weight") else "bias"
                third = value.shape[0] // 3
                for i, proj in enumerate(("q_proj", "k_proj", "v_proj")):
                    out[f"{target}self_attn.{proj}.{kind}"] = value[third * i: third * (i + 1)]
                continue
            module, _, kind = part.rpartition(".")
            if module in _RESBLOCK_PARTS:
                out[f"{target}{_RESBLOCK_PARTS[module]}.{kind}"] = value
        # logit_scale, attn_mask and anything unknown carry nothing the text encoder uses
    return out


@dataclass(frozen=True)
class EncoderShape:
    """What the tensor shapes say about an encoder (transformers layout)."""

    width: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    positions: int
    projection_dim: int | None  # None: no text_projection in the state dict


def infer_shape(sd: StateDict, heads: int | None = None) -> EncoderShape:
    """Width, depth, MLP size, vocabulary, positions and projection from `sd`'s tensors.
    The head count is not visible in any shape: 64-wide heads unless `heads` is given."""
    try:
        token = sd["text_model.embeddings.token_embedding.weight"]
        position = sd["text_model.embeddings.position_embedding.weight"]
        fc1 = sd["text_model.encoder.layers.0.mlp.fc1.weight"]
    except KeyError as exc:
        raise ValueError(f"not a CLIP text encoder state dict: {exc.args[0]} is missing") from None
    layers = 1 + max(int(m.group(1)) for k in sd if (m := _LAYER_RE.match(k)))
    width = int(token.shape[1])
    projection = sd.get("text_projection.weight")
    return EncoderShape(
        width=width,
        layers=layers,
        heads=heads or max(1, width // HEAD_WIDTH),
        intermediate=int(fc1.shape[0]),
        vocab=int(token.shape[0]),
        positions=int(position.shape[0]),
        projection_dim=int(projection.shape[0]) if projection is not None else None,
    )


def identify_encoder(sd: dict[str, Any]) -> str:
    """`clip_l`, `clip_h` or `clip_g` for a stand-alone text-encoder file (by width)."""
    width = _width(sd)
    return {768: "clip_l", 1024: "clip_h", 1280: "clip_g"}.get(width or 0, "clip_l")
