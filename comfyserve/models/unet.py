"""The LDM UNet of a checkpoint as a diffusers `UNet2DConditionModel`, numerically ComfyUI's.

The diffusers config comes from diffusers' own `create_unet_diffusers_config_from_ldm`, fed
with an LDM-style config built from the detected shapes, then adjusted where the LDM model and
diffusers' defaults differ:

* heads: diffusers' `attention_head_dim` is (for historical reasons) the number of heads per
  level; it is set from ComfyUI's rule (8 heads for SD1, channels/64 otherwise);
* transformer depth per level, down and up (`reverse_transformer_layers_per_block`), and the
  middle block's (diffusers takes it from the last level's entry, which is otherwise unused
  when the last level has no attention);
* SDXL's ADM input: ComfyUI adds `label_emb(y)` to the time embedding, where `y` is the
  pooled text embedding followed by the 256-wide sinusoidal embeddings of the size/crop
  (or aesthetic score) numbers, already concatenated. diffusers' "text_time" addition would
  rebuild that vector from `text_embeds` + `time_ids` inside the model; its `add_embedding`
  (linear_1, SiLU, linear_2) is the very same MLP as `label_emb.0.{0,2}`, so the equivalent
  that takes ComfyUI's `y` directly is diffusers' "projection" class embedding
  (`class_embedding.linear_1/linear_2` = `label_emb.0.0/label_emb.0.2`, `class_labels=y`):
  `emb = time_embedding(t) + class_embedding(y)`, the same sum in the same order.
  (`y == cat([text_embeds, add_time_proj(time_ids.flatten()).reshape(B, -1)], 1)` in diffusers'
  terms: both embed each number with `flip_sin_to_cos=True`, `freq_shift=0`, i.e. cos first.)

Numerics that already agree with ComfyUI's `openaimodel.UNetModel`: the timestep embedding
(cos first: `flip_sin_to_cos=True`, `freq_shift=0`, max period 10000), GroupNorm(32) with eps
1e-5 in residual blocks and 1e-6 before transformers, LayerNorm eps 1e-5, GEGLU with exact
GELU, no bias on q/k/v, nearest-neighbour upsampling to the skip connection's size. SD2's fp32
attention upcast is set (`upcast_attention`); it only matters for fp16 weights.

Weights are converted by diffusers' `convert_ldm_unet_checkpoint`; every UNet key of the file
must land in the model and every model weight must come from the file, else loading fails
with the file named. Tensors are matched by identity, so a source key the converter skipped
is reported as left over.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from comfyserve.models.detect import UNET_PREFIX, ModelDetectionError, UNetConfig

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """The weights of a file do not fit the model built for it."""


def ldm_original_config(unet: UNetConfig) -> dict[str, Any]:
    """An LDM-style (yaml) model config for the detected UNet, for diffusers' config helper."""
    attention_levels = [lvl for lvl in range(unet.levels) if any(unet.input_depths(lvl))]
    params: dict[str, Any] = {
        "in_channels": unet.in_channels,
        "out_channels": unet.out_channels,
        "model_channels": unet.model_channels,
        "channel_mult": list(unet.channel_mult),
        "num_res_blocks": _uniform_res_blocks(unet),
        "attention_resolutions": [2**lvl for lvl in attention_levels],
        "transformer_depth": [max(unet.input_depths(lvl), default=0) for lvl in range(unet.levels)],
        "context_dim": unet.context_dim,
        "use_linear_in_transformer": unet.use_linear_in_transformer,
    }
    if unet.num_head_channels != -1:
        params["num_head_channels"] = unet.num_head_channels
    else:
        params["num_heads"] = unet.num_heads
    if unet.adm_in_channels is not None:
        params["num_classes"] = "sequential"
        params["adm_in_channels"] = unet.adm_in_channels
    return {"model": {"params": {
        "unet_config": {"params": params},
        # Only the VAE's level count is read (for diffusers' sample_size, unused here).
        "first_stage_config": {"params": {"ddconfig": {"ch_mult": [1, 2, 4, 4]}}},
    }}}


def _uniform_res_blocks(unet: UNetConfig) -> int:
    if len(set(unet.num_res_blocks)) != 1:
        raise ModelDetectionError(
            f"UNets with different residual block counts per level ({list(unet.num_res_blocks)}) are not supported")
    return unet.num_res_blocks[0]


def _level_depth(depths: tuple[int, ...], where: str, level: int) -> int:
    if len(set(depths)) > 1:
        raise ModelDetectionError(f"transformer depths {list(depths)} differ within {where} level {level}")
    return depths[0] if depths else 0


def diffusers_unet_config(unet: UNetConfig) -> dict[str, Any]:
    """The `UNet2DConditionModel` config equivalent to the detected LDM UNet."""
    from diffusers.loaders.single_file_utils import create_unet_diffusers_config_from_ldm

    if unet.transformer_depth_middle < 0:
        raise ModelDetectionError("UNets whose middle block has no transformer are not supported")
    config = create_unet_diffusers_config_from_ldm(ldm_original_config(unet), {})
    levels = unet.levels
    down = [_level_depth(unet.input_depths(lvl), "input", lvl) for lvl in range(levels)]
    up = [_level_depth(unet.output_depths(lvl), "output", lvl) for lvl in range(levels)]
    down_types = ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in down]
    up_types = ["CrossAttnUpBlock2D" if d else "UpBlock2D" for d in reversed(up)]
    if down[-1] and down[-1] != unet.transformer_depth_middle:
        raise ModelDetectionError(
            f"the middle block's transformer depth ({unet.transformer_depth_middle}) differs from the "
            f"deepest level's ({down[-1]})")
    layers = [d if d else 1 for d in down]
    layers[-1] = unet.transformer_depth_middle
    config.update({
        "down_block_types": down_types,
        "up_block_types": up_types,
        "attention_head_dim": [unet.heads(lvl) for lvl in range(levels)],
        "transformer_layers_per_block": layers,
        "reverse_transformer_layers_per_block": [d if d else 1 for d in reversed(up)],
        "upcast_attention": unet.upcast_attention,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "cross_attention_dim": unet.context_dim,
        "addition_embed_type": None,
        "addition_time_embed_dim": None,
    })
    if unet.adm_in_channels is not None:
        config["class_embed_type"] = "projection"
        config["projection_class_embeddings_input_dim"] = unet.adm_in_channels
    config.pop("sample_size", None)
    return config


def convert_unet_state_dict(state_dict: Mapping[str, Any], unet: UNetConfig, config: dict[str, Any],
                            prefix: str = UNET_PREFIX) -> tuple[dict[str, Any], dict[str, str]]:
    """(diffusers state dict, LDM key -> diffusers key) for the UNet tensors under `prefix`."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    source = {UNET_PREFIX + k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    converted = convert_ldm_unet_checkpoint(source, {**config, "layers_per_block": _uniform_res_blocks(unet)})
    converted = {k: v for k, v in converted.items() if v is not None}
    by_identity = {id(v): k for k, v in converted.items()}
    key_map = {k[len(UNET_PREFIX):]: by_identity[id(v)] for k, v in source.items() if id(v) in by_identity}
    return converted, key_map


def build_unet(config: dict[str, Any]) -> Any:
    """An empty (meta-device) `UNet2DConditionModel`; weights come with `load_weights`."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**config)


def load_weights(module: torch.nn.Module, weights: dict[str, Any], name: str, what: str,
                 dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
    """Load `weights` into the meta-built `module`, strictly; errors name the file."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        log.warning("%s %s: missing keys %s; unexpected keys %s", name, what, missing, unexpected)
        raise ModelLoadError(
            f"{name}: the {what} weights do not fit the detected model "
            f"({len(missing)} missing, e.g. {missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]})")
    for key, value in weights.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ModelLoadError(
                f"{name}: {what} weight {key} has shape {list(value.shape)}, the model expects {list(expected[key].shape)}")
    cast = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in weights.items()}
    module.load_state_dict(cast, strict=True, assign=True)
    leftover = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if leftover:
        raise ModelLoadError(f"{name}: {what} tensors were never loaded: {leftover[:5]}")
    module.eval().requires_grad_(False)


def load_unet(state_dict: Mapping[str, Any], unet: UNetConfig, name: str, prefix: str = UNET_PREFIX,
              dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> tuple[Any, dict[str, str]]:
    """(diffusers UNet with the file's weights, LDM key -> diffusers key)."""
    config = diffusers_unet_config(unet)
    converted, key_map = convert_unet_state_dict(state_dict, unet, config, prefix)
    source_keys = [k for k in state_dict if k.startswith(prefix)]
    skipped = sorted(k for k in source_keys if k[len(prefix):] not in key_map)
    if skipped:
        log.warning("%s: UNet keys not loaded: %s", name, skipped[:20])
        raise ModelLoadError(f"{name}: {len(skipped)} UNet tensors have no place in the model, e.g. {skipped[:3]}")
    model = build_unet(config)
    load_weights(model, converted, name, "UNet", dtype, device)
    return model, key_map
