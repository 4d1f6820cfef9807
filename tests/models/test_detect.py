"""Model detection from keys and shapes: real layouts (SD1.5, sd15-mini from their manifests) and
tiny SD1/SD2/SDXL/refiner checkpoints written in LDM layout by tests/models/ldm_layout.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from comfyserve.models import detect
from comfyserve.models.detect import ModelDetectionError, detect_checkpoint
from tests.models import ldm_layout as L

DATA = Path(__file__).resolve().parent.parent / "data"


def manifest_shapes(variant: str) -> dict[str, torch.Tensor]:
    tensors = json.loads((DATA / f"manifest_{variant}.json").read_text())["tensors"]
    return {k: torch.empty(v["shape"], device="meta") for k, v in tensors.items()}


def test_sd15_full_layout():
    info = detect_checkpoint(manifest_shapes("sd15"))
    assert (info.family, info.prediction, info.latent_scale) == ("sd1", "eps", 0.18215)
    u = info.unet
    assert (u.model_channels, u.channel_mult, u.num_res_blocks) == (320, (1, 2, 4, 4), (2, 2, 2, 2))
    assert u.transformer_depth == (1, 1, 1, 1, 1, 1, 0, 0)
    assert u.transformer_depth_output == (0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1)
    assert (u.transformer_depth_middle, u.context_dim, u.use_linear_in_transformer) == (1, 768, False)
    assert (u.adm_in_channels, u.num_heads, u.num_head_channels, u.upcast_attention) == (None, 8, -1, False)
    assert [u.heads(level) for level in range(4)] == [8, 8, 8, 8]
    assert info.vae == detect.VAEConfig(ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z_channels=4, embed_dim=4,
                                        in_channels=3, out_ch=3, double_z=True, mid_attention=True)
    (clip,) = info.text_encoders
    assert (clip.name, clip.layout, clip.hidden_size, clip.num_layers, clip.num_heads) == ("clip_l", "hf", 768, 12, 12)
    assert (clip.vocab_size, clip.max_positions, clip.intermediate_size) == (49408, 77, 3072)


def test_sd15_mini_is_what_comfyui_reports():
    # RECIPE.md: num_res_blocks [1,1], transformer_depth [1,1], transformer_depth_output [1,1,1,1],
    # channel_mult [1,2], transformer_depth_middle 1, use_linear_in_transformer False, context_dim 768.
    info = detect_checkpoint(manifest_shapes("sd15-mini"))
    u = info.unet
    assert (info.family, info.prediction) == ("sd1", "eps")
    assert (u.num_res_blocks, u.transformer_depth, u.transformer_depth_output) == ((1, 1), (1, 1), (1, 1, 1, 1))
    assert (u.channel_mult, u.transformer_depth_middle, u.use_linear_in_transformer, u.context_dim) == ((1, 2), 1, False, 768)


@pytest.mark.parametrize(("family", "cfg"), [("sd1", L.sd1()), ("sd2", L.sd2()), ("sdxl", L.sdxl()),
                                             ("sdxl_refiner", L.sdxl_refiner())])
def test_tiny_layouts(family, cfg):
    info = detect_checkpoint(L.checkpoint(cfg, family, meta=True))
    u = info.unet
    assert info.family == family and info.prediction == "eps"
    assert u.model_channels == cfg.model_channels and u.channel_mult == cfg.channel_mult
    assert u.num_res_blocks == (cfg.num_res_blocks,) * len(cfg.channel_mult)
    assert u.transformer_depth == tuple(d for d in cfg.depth for _ in range(cfg.num_res_blocks))
    assert u.transformer_depth_output == tuple(d for d in reversed(cfg.depth) for _ in range(cfg.num_res_blocks + 1))
    assert u.transformer_depth_middle == cfg.depth_middle
    assert (u.context_dim, u.use_linear_in_transformer, u.adm_in_channels) == (cfg.context_dim, cfg.linear, cfg.adm)
    if family == "sd1":
        assert (u.num_heads, u.num_head_channels) == (8, -1)
    else:
        assert (u.num_heads, u.num_head_channels) == (-1, 64)
        assert [u.heads(lvl) for lvl in range(u.levels)] == [m * 64 // 64 for m in cfg.channel_mult]
    assert u.upcast_attention == (family == "sd2")
    assert info.latent_scale == (0.13025 if family.startswith("sdxl") else 0.18215)
    assert info.vae is not None and info.vae.ch == 32 and info.vae.ch_mult == (1, 2)
    names = {"sd1": ["clip_l"], "sd2": ["clip_h"], "sdxl": ["clip_l", "clip_g"], "sdxl_refiner": ["clip_g"]}[family]
    assert [t.name for t in info.text_encoders] == names


def _with_probe_std(std: float, in_channels: int = 4) -> dict:
    sd = L.checkpoint(L.sd2(in_channels=in_channels), "sd2", meta=True, with_text=False, with_vae=False)
    key = "model.diffusion_model." + detect.V_PRED_PROBE_KEY
    assert key in sd
    sd[key] = torch.randn(64, generator=torch.Generator().manual_seed(1)) * std
    return sd


def test_sd2_v_prediction_from_the_norm_bias_spread():
    assert detect_checkpoint(_with_probe_std(0.3)).prediction == "v"
    assert detect_checkpoint(_with_probe_std(0.02)).prediction == "eps"


def test_sd2_inpainting_is_never_v():
    assert detect_checkpoint(_with_probe_std(0.3, in_channels=9)).prediction == "eps"


def test_sd2_without_the_probe_block_is_eps():
    cfg = L.sd2(channel_mult=(1, 2), depth=(1, 1), num_res_blocks=1)
    assert detect_checkpoint(L.checkpoint(cfg, "sd2", meta=True)).prediction == "eps"


def test_sdxl_v_pred_marker():
    sd = L.checkpoint(L.sdxl(), "sdxl", meta=True)
    sd["v_pred"] = torch.tensor([])
    assert detect_checkpoint(sd).prediction == "v"
    sd["ztsnr"] = torch.tensor([])
    assert detect_checkpoint(sd).zsnr


def test_bare_unet_file_without_prefix():
    sd = L.fill(L.unet_shapes(L.sd1(), prefix=""), meta=True)
    info = detect_checkpoint(sd)
    assert info.unet_prefix == "" and info.family == "sd1" and info.vae is None and info.text_encoders == []


@pytest.mark.parametrize(("state_dict", "hint"), [
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.empty(4, 320, 1, 1)}, "LoRA"),
    (L.fill(L.vae_shapes(prefix=""), meta=True), "VAE"),
    ({"conv_in.weight": torch.empty(320, 4, 3, 3)}, "diffusers"),
    ({"something": torch.empty(3)}, "no Stable Diffusion UNet"),
])
def test_not_a_checkpoint(state_dict, hint):
    with pytest.raises(ModelDetectionError, match=hint):
        detect_checkpoint(state_dict)


def test_unknown_cross_attention_width():
    with pytest.raises(ModelDetectionError, match="512-wide"):
        detect_checkpoint(L.checkpoint(L.sd1(context_dim=512), "sd1", meta=True))


def test_split_text_encoders_strips_prefixes():
    sd = L.checkpoint(L.sdxl(), "sdxl", meta=True)
    info = detect_checkpoint(sd)
    parts = detect.split_text_encoders(sd, info.text_encoders)
    assert set(parts) == {"clip_l", "clip_g"}
    assert "text_model.embeddings.token_embedding.weight" in parts["clip_l"]
    assert {"token_embedding.weight", "positional_embedding", "text_projection"} <= set(parts["clip_g"])
    assert all(not k.startswith(("conditioner.", "model.")) for p in parts.values() for k in p)


def test_old_sd1_text_encoder_names_gain_text_model():
    sd = L.checkpoint(L.sd1(), "sd1", meta=True)
    old = {k.replace("transformer.text_model.", "transformer."): v for k, v in sd.items()}
    info = detect_checkpoint(old)
    parts = detect.split_text_encoders(old, info.text_encoders)
    assert "text_model.encoder.layers.0.mlp.fc1.weight" in parts["clip_l"]
