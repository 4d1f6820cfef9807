"""LDM UNet → diffusers: every key converted, nothing left over, and the same numbers as an
independent LDM forward pass (tests/models/ldm_reference.py) for each family's layout."""

from __future__ import annotations

import pytest
import torch

from comfyserve.models.detect import detect_checkpoint
from comfyserve.models.unet import ModelLoadError, diffusers_unet_config, load_unet
from tests.models import ldm_layout as L
from tests.models.ldm_reference import Reference, timestep_embedding

FAMILIES = {"sd1": L.sd1(), "sd2": L.sd2(), "sdxl": L.sdxl(), "sdxl_refiner": L.sdxl_refiner()}


@pytest.fixture(scope="module", params=list(FAMILIES))
def tiny(request):
    family = request.param
    sd = L.checkpoint(FAMILIES[family], family, seed=3, with_vae=False, with_text=False)
    info = detect_checkpoint(sd)
    unet, key_map = load_unet(sd, info.unet, f"tiny-{family}.safetensors")
    return family, sd, info, unet, key_map


def test_every_unet_key_is_converted(tiny):
    family, sd, info, unet, key_map = tiny
    ldm_keys = {k[len("model.diffusion_model."):] for k in sd}
    assert set(key_map) == ldm_keys
    assert set(key_map.values()) == set(unet.state_dict())  # one LDM key per diffusers key
    assert all(not t.is_meta and t.dtype == torch.float32 for t in unet.state_dict().values())


def test_forward_matches_the_ldm_reference(tiny):
    family, sd, info, unet, _ = tiny
    cfg = FAMILIES[family]
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 8, 8, generator=gen)
    t = torch.tensor([3.0, 801.0])
    context = torch.randn(2, 9, cfg.context_dim, generator=gen)
    y = torch.randn(2, cfg.adm, generator=gen) if cfg.adm else None
    with torch.no_grad():
        ours = unet(x, t, encoder_hidden_states=context, class_labels=y).sample
        reference = Reference(sd, heads=8 if family == "sd1" else None)(x, t, context, y)
    assert torch.isfinite(ours).all()
    assert ours.std() > 0.1
    assert (ours - reference).abs().max() < 1e-4 * reference.abs().max()


def test_odd_latent_sizes_upsample_to_the_skip(tiny):
    family, sd, info, unet, _ = tiny
    cfg = FAMILIES[family]
    x = torch.randn(1, 4, 7, 5)
    context = torch.randn(1, 5, cfg.context_dim)
    y = torch.randn(1, cfg.adm) if cfg.adm else None
    with torch.no_grad():
        ours = unet(x, torch.tensor([500.0]), encoder_hidden_states=context, class_labels=y).sample
        reference = Reference(sd, heads=8 if family == "sd1" else None)(x, torch.tensor([500.0]), context, y)
    assert ours.shape == x.shape
    assert (ours - reference).abs().max() < 1e-4 * reference.abs().max()


def test_sdxl_adm_is_diffusers_text_time_embedding():
    """ComfyUI's y = [pooled, emb(h), emb(w), emb(crop_h), emb(crop_w), emb(th), emb(tw)] through
    the projection class embedding equals diffusers' text_time addition with the same MLP."""
    from diffusers import UNet2DConditionModel

    sd = L.checkpoint(L.sdxl(adm=1280 + 6 * 256), "sdxl", seed=4, with_vae=False, with_text=False)
    info = detect_checkpoint(sd)
    ours, _ = load_unet(sd, info.unet, "tiny-sdxl")
    config = diffusers_unet_config(info.unet)
    config.update(class_embed_type=None, addition_embed_type="text_time", addition_time_embed_dim=256,
                  projection_class_embeddings_input_dim=1280 + 6 * 256)
    theirs = UNet2DConditionModel(**config)
    weights = {k.replace("class_embedding.", "add_embedding."): v for k, v in ours.state_dict().items()}
    assert theirs.load_state_dict(weights, strict=True)
    pooled = torch.randn(2, 1280)
    time_ids = torch.tensor([[1024.0, 768.0, 0.0, 16.0, 1024.0, 768.0], [512.0, 512.0, 8.0, 0.0, 640.0, 512.0]])
    y = torch.cat([pooled, timestep_embedding(time_ids.flatten(), 256).reshape(2, -1)], dim=1)
    x, t, context = torch.randn(2, 4, 8, 8), torch.tensor([20.0, 600.0]), torch.randn(2, 4, 2048)
    with torch.no_grad():
        a = ours(x, t, encoder_hidden_states=context, class_labels=y).sample
        b = theirs(x, t, encoder_hidden_states=context,
                   added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
    assert (a - b).abs().max() < 1e-5


def _sd1() -> dict:
    return L.checkpoint(L.sd1(), "sd1", seed=1, with_vae=False, with_text=False)


@pytest.mark.parametrize(("key", "message"), [
    ("model.diffusion_model.input_blocks.1.1.extra.weight", "1 unexpected"),  # inside a block: converted, unknown
    ("model.diffusion_model.extra.weight", "no place"),  # outside every block: the converter skips it
])
def test_an_extra_unet_key_fails_naming_the_file(key, message):
    sd = _sd1()
    sd[key] = torch.zeros(3)
    with pytest.raises(ModelLoadError, match=f"bad.safetensors.*{message}"):
        load_unet(sd, detect_checkpoint(sd).unet, "bad.safetensors")


def test_a_missing_unet_key_fails_naming_the_file():
    sd = _sd1()
    info = detect_checkpoint(sd)
    del sd["model.diffusion_model.output_blocks.0.1.transformer_blocks.0.attn2.to_out.0.bias"]
    with pytest.raises(ModelLoadError, match="bad.safetensors.*1 missing"):
        load_unet(sd, info.unet, "bad.safetensors")


def test_a_wrong_shape_fails_naming_the_file():
    sd = _sd1()
    info = detect_checkpoint(sd)
    sd["model.diffusion_model.out.2.bias"] = torch.zeros(5)
    with pytest.raises(ModelLoadError, match="bad.safetensors.*conv_out.bias"):
        load_unet(sd, info.unet, "bad.safetensors")


def test_sd15_mini_matches_the_reference(sd15_mini_checkpoint):
    from comfyserve.models.files import load_state_dict

    sd = load_state_dict(sd15_mini_checkpoint)
    info = detect_checkpoint(sd)
    unet, key_map = load_unet(sd, info.unet, sd15_mini_checkpoint.name)
    assert len(key_map) == sum(1 for k in sd if k.startswith("model.diffusion_model."))
    # Loaded values equal the file's (RECIPE: "every loaded UNet value equals the file value").
    params = unet.state_dict()
    assert all(torch.equal(params[key_map[k[22:]]], v.float()) for k, v in sd.items() if k.startswith("model.diffusion_model."))
    gen = torch.Generator().manual_seed(0)
    x, context = torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 77, 768, generator=gen)
    with torch.no_grad():
        ours = unet(x, torch.tensor([999.0]), encoder_hidden_states=context).sample
        reference = Reference(sd)(x, torch.tensor([999.0]), context)
    assert (ours - reference).abs().max() < 1e-4 * reference.abs().max()
