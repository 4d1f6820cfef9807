"""DiffusionModel: ComfyUI's apply_model around the diffusers UNet, clones, and weight patches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from comfyserve.models.detect import detect_checkpoint
from comfyserve.models.diffusion import (
    DiffusionModel,
    LowRankPatch,
    calculate_weight,
    latent_format_for,
    make_diffusion_model,
)
from comfyserve.models.unet import load_unet
from tests.models import ldm_layout as L

DATA = Path(__file__).resolve().parent.parent / "data"


class StandInSampling:
    """The minimal ModelSampling contract (EPS): enough to check apply_model's plumbing."""

    def __init__(self) -> None:
        self.sigmas = torch.linspace(0.03, 14.6, 1000)

    def calculate_input(self, sigma, x):
        return x / (sigma.view(-1, 1, 1, 1) ** 2 + 1.0) ** 0.5

    def timestep(self, sigma):
        return (sigma.log()[None] - self.sigmas.log()[:, None]).abs().argmin(dim=0)

    def calculate_denoised(self, sigma, out, x):
        return x - out * sigma.view(-1, 1, 1, 1)


def tiny_model(family: str = "sd1", cfg=None, seed: int = 0) -> DiffusionModel:
    cfg = cfg or {"sd1": L.sd1(), "sdxl": L.sdxl()}[family]
    sd = L.checkpoint(cfg, family, seed=seed, with_vae=False, with_text=False)
    info = detect_checkpoint(sd)
    unet, key_map = load_unet(sd, info.unet, f"tiny-{family}")
    return make_diffusion_model(unet, info.family, info.prediction, key_map, f"tiny-{family}",
                                sampling_factory=lambda prediction, zsnr: StandInSampling())


@pytest.fixture(scope="module")
def sd1():
    return tiny_model("sd1")


def test_apply_model_is_comfyuis_formula(sd1):
    x = torch.randn(2, 4, 8, 8)
    sigma = torch.tensor([14.0, 0.5])
    context = torch.randn(2, 5, 768)
    denoised = sd1.apply_model(x, sigma, c_crossattn=context)
    ms = sd1.model_sampling
    with torch.no_grad():
        eps = sd1.unet(ms.calculate_input(sigma, x), ms.timestep(sigma).float(), encoder_hidden_states=context).sample
    assert torch.allclose(denoised, x - eps * sigma.view(-1, 1, 1, 1), atol=1e-6)
    assert denoised.dtype == torch.float32 and torch.isfinite(denoised).all()


def test_properties(sd1):
    assert (sd1.family, sd1.prediction, sd1.device.type, sd1.dtype) == ("sd1", "eps", "cpu", torch.float32)
    assert sd1.latent_format.scale_factor == 0.18215 and latent_format_for("sdxl").scale_factor == 0.13025
    latent = torch.randn(1, 4, 2, 2)
    assert torch.allclose(sd1.process_latent_out(sd1.process_latent_in(latent)), latent)
    assert sd1.concat_channels == 0


def test_real_model_sampling_is_used_when_present():
    pytest.importorskip("comfyserve.sampling.model_sampling")
    sd = L.checkpoint(L.sd1(), "sd1", with_vae=False, with_text=False, meta=False)
    info = detect_checkpoint(sd)
    unet, key_map = load_unet(sd, info.unet, "tiny")
    model = make_diffusion_model(unet, "sd1", "eps", key_map)
    assert len(model.model_sampling.sigmas) == 1000
    out = model.apply_model(torch.randn(1, 4, 8, 8), torch.tensor([3.0]), c_crossattn=torch.randn(1, 3, 768))
    assert torch.isfinite(out).all()


def test_sdxl_needs_y_and_uses_it():
    model = tiny_model("sdxl", L.sdxl(channel_mult=(1, 2), depth=(0, 1), depth_middle=1, num_res_blocks=1))
    x, sigma, context = torch.randn(1, 4, 8, 8), torch.tensor([2.0]), torch.randn(1, 3, 2048)
    with pytest.raises(ValueError, match="ADM vector y"):
        model.apply_model(x, sigma, c_crossattn=context)
    a = model.apply_model(x, sigma, c_crossattn=context, y=torch.zeros(1, 2816))
    b = model.apply_model(x, sigma, c_crossattn=context, y=torch.ones(1, 2816))
    assert not torch.allclose(a, b)


def test_wrong_channel_count_is_explained(sd1):
    with pytest.raises(ValueError, match="4 input channels, got 5"):
        sd1.apply_model(torch.randn(1, 4, 8, 8), torch.tensor([1.0]), c_crossattn=torch.randn(1, 2, 768),
                        c_concat=torch.randn(1, 1, 8, 8))


def test_patches_live_on_the_clone(sd1):
    x, sigma, context = torch.randn(1, 4, 8, 8), torch.tensor([5.0]), torch.randn(1, 4, 768)
    before = sd1.apply_model(x, sigma, c_crossattn=context)
    original_weight = sd1.unet.down_blocks[0].attentions[0].proj_in.weight.detach().clone()
    clone = sd1.clone()
    up, down = torch.randn(64, 4, 1, 1), torch.randn(4, 64, 1, 1)
    accepted = clone.add_patches({"lora_unknown": 1,
                                  "diffusion_model.input_blocks.1.1.proj_in.weight": LowRankPatch(up, down, alpha=2.0)},
                                 strength_patch=0.5)
    assert accepted == ["diffusion_model.input_blocks.1.1.proj_in.weight"]
    assert list(clone.patches) == ["down_blocks.0.attentions.0.proj_in.weight"] and not sd1.patches
    patched = clone.apply_model(x, sigma, c_crossattn=context)
    assert not torch.allclose(patched, before)
    expected = original_weight + 0.5 * (2.0 / 4) * (up.flatten(1) @ down.flatten(1)).reshape(original_weight.shape)
    assert torch.allclose(sd1.unet.down_blocks[0].attentions[0].proj_in.weight, expected, atol=1e-6)
    # The original model gets its own weights back, exactly, and the clone its patch again.
    assert torch.equal(sd1.apply_model(x, sigma, c_crossattn=context), before)
    assert torch.equal(sd1.unet.down_blocks[0].attentions[0].proj_in.weight, original_weight)
    assert torch.equal(clone.apply_model(x, sigma, c_crossattn=context), patched)
    assert torch.equal(clone.clone().apply_model(x, sigma, c_crossattn=context), patched)
    sd1.patch_weights()
    assert torch.equal(sd1.unet.down_blocks[0].attentions[0].proj_in.weight, original_weight)


def test_unpatched_backups_wait_on_the_cpu_whatever_device_the_unet_moves_to():
    model = tiny_model(seed=3)
    original = model.unet.down_blocks[0].attentions[0].proj_in.weight.detach().clone()
    clone = model.clone()
    clone.add_patches({"diffusion_model.input_blocks.1.1.proj_in.weight":
                       LowRankPatch(torch.randn(64, 4, 1, 1), torch.randn(4, 64, 1, 1), alpha=4.0)})
    clone.patch_weights()
    clone.to("meta")  # any device but the CPU: the backup must not follow the UNet there
    (backup,) = clone._shared.backup.values()
    assert backup.device.type == "cpu" and torch.equal(backup, original)
    model.patch_weights()  # the unpatched model restores the CPU backup onto the UNet's device
    weight = model.unet.down_blocks[0].attentions[0].proj_in.weight
    assert weight.device.type == "meta" and not clone._shared.backup


def test_calculate_weight_strengths():
    weight = torch.ones(2, 2)
    delta = torch.full((2, 2), 2.0)
    assert torch.equal(calculate_weight(weight, [(0.5, delta, 1.0)]), torch.full((2, 2), 2.0))
    assert torch.equal(calculate_weight(weight, [(1.0, delta, 0.5)]), torch.full((2, 2), 2.5))
    assert torch.equal(calculate_weight(weight, [(1.0, lambda w: w * 3, 1.0)]), torch.full((2, 2), 4.0))
    patch = LowRankPatch(torch.ones(2, 1), torch.ones(1, 2), alpha=2.0)  # delta = 2 everywhere
    assert torch.equal(calculate_weight(weight, [(0.25, patch, 1.0)]), torch.full((2, 2), 1.5))
    assert torch.equal(patch.calculate_weight(weight, "k", 0.25), torch.full((2, 2), 1.5))


def test_locon_mid_patch_shape():
    up, down, mid = torch.randn(8, 4, 1, 1), torch.randn(4, 6, 1, 1), torch.randn(4, 4, 3, 3)
    delta = LowRankPatch(up, down, alpha=4, mid=mid)(torch.zeros(8, 6, 3, 3))
    assert delta.shape == (8, 6, 3, 3) and torch.isfinite(delta).all()


def test_lora_mini_names_all_map_to_unet_weights(sd1):
    # The tiny SD1 layout has sd15-mini's block structure: lora-mini's UNet names must all map.
    tensors = json.loads((DATA / "manifest_lora-mini.json").read_text())["tensors"]
    modules = {k.split(".")[0] for k in tensors if k.startswith("lora_unet_")}
    assert len(modules) == 84
    key_map = sd1.lora_key_map()
    assert modules <= set(key_map)
    params = dict(sd1.unet.named_parameters())
    for module in modules:
        rank_4d = len(tensors[f"{module}.lora_down.weight"]["shape"]) == 4
        assert (params[key_map[module]].ndim == 4) == rank_4d, module
    # LDM-named kohya keys map too.
    assert key_map["lora_unet_input_blocks_1_1_proj_in"] == "down_blocks.0.attentions.0.proj_in.weight"
    assert key_map["diffusion_model.middle_block.1.proj_out"] == "mid_block.attentions.0.proj_out.weight"


def test_lora_mini_shapes_fit_sd15_mini(sd15_mini_checkpoint):
    from comfyserve.models.files import load_state_dict

    sd = load_state_dict(sd15_mini_checkpoint)
    info = detect_checkpoint(sd)
    unet, key_map = load_unet(sd, info.unet, sd15_mini_checkpoint.name)
    model = make_diffusion_model(unet, info.family, info.prediction, key_map)
    tensors = json.loads((DATA / "manifest_lora-mini.json").read_text())["tensors"]
    lora_map = model.lora_key_map()
    params = dict(unet.named_parameters())
    modules = {k.split(".")[0] for k in tensors if k.startswith("lora_unet_")}
    for module in modules:
        up, down = tensors[f"{module}.lora_up.weight"]["shape"], tensors[f"{module}.lora_down.weight"]["shape"]
        weight = params[lora_map[module]]
        assert (weight.shape[0], weight.shape[1]) == (up[0], down[1]), module
