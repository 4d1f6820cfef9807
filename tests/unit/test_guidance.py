"""Guidance on a stand-in model whose prediction is its text input's mean: areas, fuzzy edges,
strengths, masks, timestep ranges, same-area twins, CFG and the inpainting wrapper."""

from __future__ import annotations

import torch

from comfyserve.sampling.guidance import (
    CfgDenoiser,
    InpaintDenoiser,
    add_same_area_twin,
    calc_cond_batch,
    convert_cond,
    prepare_mask,
    process_conds,
    resolve_areas_and_masks,
    sdxl_adm,
)


class Sampling:
    def percent_to_sigma(self, percent: float) -> float:
        return 10.0 * (1.0 - percent)  # 0% → sigma 10, 100% → 0

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        return noise * sigma + latent_image


class Model:
    """Predicts, everywhere, the mean of the conditioning tensor it is given (per batch item)."""

    family = "sd1"
    model_sampling = Sampling()

    def __init__(self):
        self.batches = []

    def apply_model(self, x, sigma, c_crossattn, **_):
        self.batches.append(x.shape[0])
        value = c_crossattn.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)
        return torch.ones_like(x) * value


def conditioning(value: float, **options) -> list:
    return [[torch.full((1, 77, 8), value), options]]


def prepared(model, positive, negative, shape=(1, 4, 16, 16)):
    noise = torch.zeros(shape)
    conds = process_conds(model, noise, {"positive": convert_cond(positive), "negative": convert_cond(negative)},
                          torch.device("cpu"))
    return conds["positive"], conds["negative"], noise


def test_plain_cfg_and_batched_cond_uncond():
    model = Model()
    positive, negative, x = prepared(model, conditioning(3.0), conditioning(1.0))
    denoised = CfgDenoiser(model, positive, negative, cfg=2.5)(x, torch.tensor([5.0]))
    assert torch.allclose(denoised, torch.full_like(x, 1.0 + (3.0 - 1.0) * 2.5))
    assert model.batches == [2]  # cond and uncond in one model call
    model.batches.clear()
    only = CfgDenoiser(model, positive, negative, cfg=1.0)(x, torch.tensor([5.0]))
    assert torch.allclose(only, torch.full_like(x, 3.0)) and model.batches == [1]  # cfg 1 skips the negative


def test_area_is_averaged_with_fuzzy_inner_edges():
    model = Model()
    # Latent 16×16; the second cond covers columns 8..15 (width 64 px at x 64 px → 8 at 8).
    area = {"area": (16, 8, 0, 8), "strength": 1.0}
    positive, _, x = prepared(model, conditioning(0.0) + conditioning(4.0, **area), conditioning(0.0))
    (pred,) = calc_cond_batch(model, [positive], x, torch.tensor([1.0]))
    row = pred[0, 0, 5]
    assert torch.allclose(row[:8], torch.zeros(8))
    # The area's left edge (x != 0) fades in over a quarter of its 8 columns: weights 1/2, 2/2;
    # the right edge is the image border, the top and bottom too.
    weights = torch.tensor([0.5, 1, 1, 1, 1, 1, 1, 1])
    assert torch.allclose(row[8:], 4.0 * weights / (1.0 + weights))


def test_strength_mask_and_timestep_range():
    model = Model()
    mask = torch.zeros(1, 32, 32)
    mask[:, :, 16:] = 1.0  # right half, given at twice the latent's size: resized bilinearly
    positive, _, x = prepared(
        model, conditioning(0.0) + conditioning(6.0, mask=mask, mask_strength=0.5, strength=2.0), conditioning(0.0))
    (pred,) = calc_cond_batch(model, [positive], x, torch.tensor([1.0]))
    # Weight 1 for the plain cond, 0.5·2 = 1 for the masked one: their average.
    assert torch.allclose(pred[0, 0, 3, 12], torch.tensor(3.0))
    assert torch.allclose(pred[0, 0, 3, 2], torch.tensor(0.0))

    late = conditioning(0.0) + conditioning(8.0, start_percent=0.5, end_percent=1.0)
    positive, _, x = prepared(model, late, conditioning(0.0))
    early = calc_cond_batch(model, [positive], x, torch.tensor([9.0]))[0]  # 10% in: only the first
    later = calc_cond_batch(model, [positive], x, torch.tensor([2.0]))[0]  # 80% in: both
    assert torch.allclose(early, torch.zeros_like(x)) and torch.allclose(later, torch.full_like(x, 4.0))


def test_percentage_area_mask_bounds_and_same_area_twin():
    (cond,) = resolve_areas_and_masks([{"area": ("percentage", 0.5, 0.25, 0.5, 0.0)}], (16, 32), torch.device("cpu"))
    assert cond["area"] == (8, 8, 8, 0)
    mask = torch.zeros(1, 16, 16)
    mask[:, 2:6, 4:12] = 1.0
    (bounded,) = resolve_areas_and_masks([{"mask": mask, "set_area_to_bounds": True}], (16, 16), torch.device("cpu"))
    assert bounded["area"] == (4, 8, 2, 4)

    negatives = [{"model_conds": {"c_crossattn": "neg"}}]
    add_same_area_twin(negatives, {"area": (8, 8, 0, 8), "strength": 0.5, "model_conds": {"c_crossattn": "pos"}})
    assert len(negatives) == 2 and negatives[1]["area"] == (8, 8, 0, 8)
    assert negatives[1]["model_conds"] == {"c_crossattn": "neg"} and negatives[1]["strength"] == 0.5
    add_same_area_twin(negatives, {"area": (8, 8, 0, 8), "model_conds": {}})
    assert len(negatives) == 2  # one with that very area exists now


def test_inpainting_keeps_the_unmasked_latent():
    latent = torch.full((1, 4, 4, 4), 2.0)
    noise = torch.ones(1, 4, 4, 4)
    raw = torch.zeros(1, 1, 4, 4)
    raw[..., :2] = 1.0  # denoise only the left half
    mask = prepare_mask(raw, latent.shape, torch.device("cpu"))
    seen = {}

    def inner(x, sigma, **_):
        seen["x"] = x.clone()
        return torch.full_like(x, -1.0)

    out = InpaintDenoiser(inner, Sampling(), latent, noise, mask)(torch.zeros_like(latent), torch.tensor([3.0]))
    assert torch.allclose(seen["x"][..., 2:], torch.full((1, 4, 4, 2), 1 * 3.0 + 2.0))  # noised original
    assert torch.allclose(seen["x"][..., :2], torch.zeros(1, 4, 4, 2))
    assert torch.allclose(out[..., :2], torch.full((1, 4, 4, 2), -1.0))
    assert torch.allclose(out[..., 2:], torch.full((1, 4, 4, 2), 2.0))


def test_sdxl_adm_layout():
    pooled = torch.randn(1, 1280)
    y = sdxl_adm({"pooled_output": pooled, "width": 1024, "height": 768}, refiner=False)
    assert y.shape == (1, 1280 + 6 * 256)
    assert torch.equal(y[:, :1280], pooled)
    # The first size embedding is the height's: cos(768·f) for the first frequency f = 1.
    assert torch.isclose(y[0, 1280], torch.cos(torch.tensor(768.0)))
    refiner = sdxl_adm({"pooled_output": pooled, "prompt_type": "negative"}, refiner=True)
    assert refiner.shape == (1, 1280 + 5 * 256)
    assert torch.isclose(refiner[0, 1280 + 4 * 256], torch.cos(torch.tensor(2.5)))


def test_wide_areas_fade_over_eight_steps_on_inner_edges():
    model = Model()
    # A 40-column latent; the area covers columns 0..31: its right edge is inside, so it fades
    # over min(8, 32 // 4) = 8 columns.
    area = {"area": (8, 32, 0, 0), "strength": 1.0}
    positive, _, x = prepared(model, conditioning(0.0) + conditioning(2.0, **area), conditioning(0.0),
                              shape=(1, 4, 8, 40))
    (pred,) = calc_cond_batch(model, [positive], x, torch.tensor([1.0]))
    row = pred[0, 0, 3]
    weights = torch.arange(8, 0, -1) / 8  # columns 24..31: 8/8 … 1/8
    assert torch.allclose(row[24:32], 2.0 * weights / (1.0 + weights))
    assert torch.allclose(row[:24], torch.full((24,), 1.0)) and torch.allclose(row[32:], torch.zeros(8))
