"""DiffusersLoader: a diffusers-layout SDXL folder (saved with save_pretrained, nothing fetched)
loads as MODEL/CLIP/VAE and predicts what the diffusers pipeline's own UNet predicts."""

from __future__ import annotations

import json

import pytest
import torch

import nodes.loaders as loaders
from comfyserve import runtime
from comfyserve.config import Settings
from comfyserve.models import cache, checkpoint
from comfyserve.paths import Folders
from tests.models.ldm_reference import timestep_embedding


@pytest.fixture
def folder(tmp_path, monkeypatch):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    settings = Settings(base_directory=tmp_path)
    monkeypatch.setattr(runtime, "_settings", settings)
    monkeypatch.setattr(runtime, "_folders", Folders.from_settings(settings))
    cache.MODELS.unload_all()
    root = tmp_path / "models" / "diffusers" / "org" / "tiny-xl"
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=1, cross_attention_dim=2048,
        attention_head_dim=(1, 1), transformer_layers_per_block=(1, 1), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
        norm_num_groups=32)
    unet.save_pretrained(root / "unet")
    AutoencoderKL(block_out_channels=(32,), down_block_types=("DownEncoderBlock2D",),
                  up_block_types=("UpDecoderBlock2D",), layers_per_block=1, latent_channels=4,
                  norm_num_groups=32).save_pretrained(root / "vae")
    small = dict(vocab_size=100, max_position_embeddings=77, num_hidden_layers=1, intermediate_size=64)
    CLIPTextModel(CLIPTextConfig(hidden_size=768, num_attention_heads=12, **small)).save_pretrained(root / "text_encoder")
    CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=1280, num_attention_heads=20, projection_dim=1280, **small)
                                ).save_pretrained(root / "text_encoder_2")
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": "v_prediction"}))
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    yield root, unet
    cache.MODELS.unload_all()


def test_diffusers_sdxl_folder(folder, monkeypatch):
    root, original = folder
    calls = []
    monkeypatch.setattr(checkpoint, "_text_loader", lambda: lambda parts, family: calls.append((parts, family)) or "clip")
    assert loaders.DiffusersLoader.INPUT_TYPES()["required"]["model_path"] == (["org/tiny-xl"],)
    model, clip, vae = loaders.DiffusersLoader().load_checkpoint("org/tiny-xl")
    assert (model.family, model.prediction, clip) == ("sdxl", "v", "clip")
    (parts, family), = calls
    assert family == "sdxl" and sorted(parts) == ["clip_g", "clip_l"]
    assert "text_projection.weight" in parts["clip_g"] and "text_model.embeddings.token_embedding.weight" in parts["clip_l"]
    assert vae.decode(torch.zeros(1, 4, 2, 2)).shape == (1, 2, 2, 3)

    pooled = torch.randn(1, 1280)
    time_ids = torch.tensor([[512.0, 512.0, 0.0, 0.0, 512.0, 512.0]])
    y = torch.cat([pooled, timestep_embedding(time_ids.flatten(), 256).reshape(1, -1)], dim=1)
    x, t, context = torch.randn(1, 4, 8, 8), torch.tensor([400.0]), torch.randn(1, 3, 2048)
    with torch.no_grad():
        ours = model.unet(x, t, encoder_hidden_states=context, class_labels=y).sample
        theirs = original(x, t, encoder_hidden_states=context,
                          added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
    assert (ours - theirs).abs().max() < 1e-5


def test_missing_diffusers_folder(folder):
    with pytest.raises(FileNotFoundError, match="folder 'diffusers' with filename 'org/none'"):
        loaders.DiffusersLoader().load_checkpoint("org/none")
