"""Models in diffusers' own layout: model folders (DiffusersLoader) and diffusers-format VAE files.

A diffusers folder has `model_index.json`, `unet/`, `vae/`, `text_encoder/` (and for SDXL
`text_encoder_2/`), `scheduler/`; each part a `config.json` and weights (`.safetensors`, optionally
sharded, or `.bin`). Everything is read from the folder: nothing is fetched.

The UNet is built from its config with one change for SDXL: diffusers' "text_time" addition
embedding becomes the equivalent "projection" class embedding (same two linear layers, renamed),
so the model takes ComfyUI's ADM vector `y` like a single-file SDXL (see unet.py). The prediction
type comes from `scheduler/scheduler_config.json` (`prediction_type`, `rescale_betas_zero_snr`).
Text encoders are passed on in transformers' layout (`text_model.*`), named by width.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from comfyserve.models import detect
from comfyserve.models.cache import MODELS
from comfyserve.models.files import load_state_dict
from comfyserve.models.unet import ModelLoadError, load_weights

log = logging.getLogger(__name__)

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                "model.safetensors", "model.fp16.safetensors", "diffusion_pytorch_model.bin", "pytorch_model.bin")
INDEX_NAMES = ("diffusion_pytorch_model.safetensors.index.json", "model.safetensors.index.json")

# diffusers' pre-0.14 attention names in VAEs → the current ones.
OLD_ATTENTION_NAMES = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}


def _config(part: Path) -> dict[str, Any]:
    return {k: v for k, v in json.loads((part / "config.json").read_text()).items() if not k.startswith("_")}


def read_part_weights(part: Path) -> dict[str, Any]:
    """The tensors of one component folder (whole file or shards)."""
    for index_name in INDEX_NAMES:
        index = part / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            tensors: dict[str, Any] = {}
            for shard in shards:
                tensors.update(load_state_dict(part / shard))
            return tensors
    for name in WEIGHT_NAMES:
        if (part / name).is_file():
            return load_state_dict(part / name)
    raise ModelLoadError(f"{part}: no weights file ({', '.join(WEIGHT_NAMES)})")


def family_of_unet_config(config: dict[str, Any]) -> str:
    context = config.get("cross_attention_dim")
    context = context[0] if isinstance(context, (list, tuple)) else context
    if config.get("addition_embed_type") == "text_time":
        return {2048: "sdxl", 1280: "sdxl_refiner"}.get(context) or _unknown(context)
    return {768: "sd1", 1024: "sd2"}.get(context) or _unknown(context)


def _unknown(context: Any) -> str:
    raise ModelLoadError(f"unsupported diffusers UNet ({context}-wide cross attention)")


def adm_unet_config(config: dict[str, Any], weights: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """SDXL: "text_time" addition embedding → "projection" class embedding (config and weights)."""
    if config.get("addition_embed_type") != "text_time":
        return config, weights
    config = {**config, "addition_embed_type": None, "addition_time_embed_dim": None,
              "class_embed_type": "projection"}
    weights = {(f"class_embedding.{k[len('add_embedding.'):]}" if k.startswith("add_embedding.") else k): v
               for k, v in weights.items()}
    return config, weights


def load_diffusers_unet(part: Path, device: torch.device, dtype: torch.dtype) -> tuple[Any, str]:
    from diffusers import UNet2DConditionModel

    config = _config(part)
    family = family_of_unet_config(config)
    config, weights = adm_unet_config(config, read_part_weights(part))
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    load_weights(unet, weights, str(part), "UNet", dtype, device)
    return unet, family


def vae_weights_from_diffusers(weights: dict[str, Any]) -> dict[str, Any]:
    """Old diffusers attention names (query/key/value/proj_attn) → today's, conv weights flattened."""
    out = {}
    for key, value in weights.items():
        new = key
        for old, current in OLD_ATTENTION_NAMES.items():
            if ".mid_block.attentions." in key and old in key:
                new = key.replace(old, current)
        if ".mid_block.attentions." in new and new.endswith(".weight") and value.ndim > 2 and "group_norm" not in new:
            value = value.reshape(value.shape[0], value.shape[1])
        out[new] = value
    return out


def vae_config_from_diffusers_keys(weights: dict[str, Any]) -> tuple[dict[str, Any], detect.VAEConfig]:
    keys = list(weights)
    levels = detect._count_indices(keys, "encoder.down_blocks.")
    channels = [tuple(weights[f"encoder.down_blocks.{i}.resnets.0.conv2.weight"].shape)[0] for i in range(levels)]
    layers = detect._count_indices(keys, "encoder.down_blocks.0.resnets.")
    latent = tuple(weights["decoder.conv_in.weight"].shape)[1]
    in_channels = tuple(weights["encoder.conv_in.weight"].shape)[1]
    out_channels = tuple(weights["decoder.conv_out.weight"].shape)[0]
    moments = tuple(weights["encoder.conv_out.weight"].shape)[0]
    mid_attention = any(k.startswith("encoder.mid_block.attentions.") for k in keys)
    config = {
        "in_channels": in_channels, "out_channels": out_channels, "block_out_channels": channels,
        "down_block_types": ["DownEncoderBlock2D"] * levels, "up_block_types": ["UpDecoderBlock2D"] * levels,
        "layers_per_block": layers, "latent_channels": latent, "norm_num_groups": 32,
        "mid_block_add_attention": mid_attention,
    }
    summary = detect.VAEConfig(
        ch=channels[0], ch_mult=tuple(c // channels[0] for c in channels), num_res_blocks=layers,
        z_channels=latent, embed_dim=latent, in_channels=in_channels, out_ch=out_channels,
        double_z=moments == 2 * latent, mid_attention=mid_attention)
    return config, summary


def load_diffusers_vae_weights(weights: dict[str, Any], name: str, device: torch.device, dtype: torch.dtype,
                               config: dict[str, Any] | None = None) -> Any:
    from diffusers import AutoencoderKL

    from comfyserve.models.vae import VAE

    weights = vae_weights_from_diffusers(weights)
    inferred, summary = vae_config_from_diffusers_keys(weights)
    with torch.device("meta"):
        model = AutoencoderKL.from_config(config) if config else AutoencoderKL(**inferred)
    load_weights(model, weights, name, "VAE", dtype, device)
    return VAE(model, summary, name, dtype, device)


def load_text_encoder_part(part: Path) -> tuple[str, dict[str, Any]]:
    from comfyserve.models.checkpoint import classify_text_encoder

    return classify_text_encoder(read_part_weights(part))


def load_diffusers_folder_uncached(folder: Path, output_vae: bool = True, output_clip: bool = True) -> tuple[Any, Any, Any]:
    from comfyserve.models.checkpoint import compute_device, make_clip, unet_dtype, vae_dtype
    from comfyserve.models.diffusion import make_diffusion_model

    if not (folder / "model_index.json").is_file():
        raise ModelLoadError(f"{folder}: not a diffusers model folder (no model_index.json)")
    device = compute_device()
    unet, family = load_diffusers_unet(folder / "unet", device, unet_dtype())
    scheduler = {}
    if (folder / "scheduler" / "scheduler_config.json").is_file():
        scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    prediction = "v" if scheduler.get("prediction_type") == "v_prediction" else "eps"
    zsnr = bool(scheduler.get("rescale_betas_zero_snr"))
    model = make_diffusion_model(unet, family, prediction, {}, folder.name, zsnr)
    vae = None
    if output_vae and (folder / "vae").is_dir():
        vae = load_diffusers_vae_weights(read_part_weights(folder / "vae"), f"{folder.name}/vae", device,
                                         vae_dtype(), _config(folder / "vae"))
    clip = None
    if output_clip:
        parts: dict[str, dict[str, Any]] = {}
        for sub in ("text_encoder", "text_encoder_2"):
            if (folder / sub).is_dir():
                name, tensors = load_text_encoder_part(folder / sub)
                parts[name] = tensors
        if parts:
            clip = make_clip(parts, family, folder.name)
    return model, clip, vae


def load_diffusers_folder(folder: Path | str, output_vae: bool = True, output_clip: bool = True) -> tuple[Any, Any, Any]:
    folder = Path(folder)
    return MODELS.get("diffusers", folder / "model_index.json",
                      lambda: load_diffusers_folder_uncached(folder, output_vae, output_clip), output_vae, output_clip)
