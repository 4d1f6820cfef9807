"""The 9 schedulers produce the sigmas their formulas give (expected values computed here in
float64 from the formulas and the independently derived sigma table), and KSampler's rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from comfyserve.sampling.model_sampling import make_model_sampling
from comfyserve.sampling.schedulers import (
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS,
    SCHEDULER_NAMES,
    calculate_sigmas,
    sigmas_for,
)
from tests.conftest import reference

MS = make_model_sampling("eps")
_ALPHAS_CUMPROD = np.cumprod(1 - np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2)
TABLE = np.sqrt((1 - _ALPHAS_CUMPROD) / _ALPHAS_CUMPROD)  # the SD sigma table, float64
LOG = np.log(TABLE)
SMIN, SMAX = float(TABLE[0]), float(TABLE[-1])


def interp_sigma(t: float) -> float:
    lo, hi = math.floor(t), math.ceil(t)
    w = t - lo
    return math.exp((1 - w) * LOG[lo] + w * LOG[hi])


def check(actual: torch.Tensor, expected, rtol=2e-6):
    assert actual.dtype == torch.float32
    np.testing.assert_allclose(actual.numpy().astype(np.float64), np.asarray(expected, dtype=np.float64), rtol=rtol, atol=1e-7)


def test_names_are_comfyuis_in_order():
    ref = reference("object_info_full.json")["body"]
    assert SCHEDULER_NAMES == ref["KSampler"]["input"]["required"]["scheduler"][0]
    assert SCHEDULER_NAMES == ref["KSamplerAdvanced"]["input"]["required"]["scheduler"][0]


@pytest.mark.parametrize("steps", [1, 5, 20])
def test_normal(steps):
    ts = np.linspace(999, 0, steps)
    check(calculate_sigmas(MS, "normal", steps), [interp_sigma(t) for t in ts] + [0.0])


@pytest.mark.parametrize("steps", [1, 5, 20])
def test_sgm_uniform(steps):
    ts = np.linspace(999, 0, steps + 1)[:-1]
    check(calculate_sigmas(MS, "sgm_uniform", steps), [interp_sigma(t) for t in ts] + [0.0])


@pytest.mark.parametrize("steps", [1, 5, 7, 20])
def test_simple(steps):
    idx = [999 - int(i * 1000 / steps) for i in range(steps)]
    check(calculate_sigmas(MS, "simple", steps), [TABLE[i] for i in idx] + [0.0])


@pytest.mark.parametrize("steps", [1, 5, 20])
def test_karras_rho_7(steps):
    ramp = np.linspace(0, 1, steps)
    expected = (SMAX ** (1 / 7) + ramp * (SMIN ** (1 / 7) - SMAX ** (1 / 7))) ** 7
    check(calculate_sigmas(MS, "karras", steps), list(expected) + [0.0], rtol=1e-5)


@pytest.mark.parametrize("steps", [2, 5, 20])
def test_exponential(steps):
    expected = np.exp(np.linspace(math.log(SMAX), math.log(SMIN), steps))
    check(calculate_sigmas(MS, "exponential", steps), list(expected) + [0.0], rtol=1e-5)


def test_ddim_uniform_keeps_comfyuis_step_count():
    # 1000 // 5 = 200: entries 801, 601, 401, 201, 1, then 0.
    check(calculate_sigmas(MS, "ddim_uniform", 5), [TABLE[i] for i in (801, 601, 401, 201, 1)] + [0.0])
    # 1000 // 7 = 142 gives eight entries (1 ... 995): one sigma more than steps + 1, as in ComfyUI.
    s7 = calculate_sigmas(MS, "ddim_uniform", 7)
    check(s7, [TABLE[i] for i in range(995, 0, -142)] + [0.0])
    assert len(s7) == 9


@pytest.mark.parametrize("steps", [5, 20, 50])
def test_beta(steps):
    quantiles = 1 - np.arange(steps) / steps
    ts = np.rint(scipy.stats.beta.ppf(quantiles, 0.6, 0.6) * 999).astype(int)
    deduped = [t for k, t in enumerate(ts) if k == 0 or t != ts[k - 1]]
    sigmas = calculate_sigmas(MS, "beta", steps)
    check(sigmas, [TABLE[t] for t in deduped] + [0.0])
    assert float(sigmas[0]) == pytest.approx(SMAX, rel=1e-6)  # ppf(1) = 1: starts at sigma_max
    assert len(sigmas) <= steps + 1


@pytest.mark.parametrize("steps", [1, 2, 5, 20])
def test_linear_quadratic(steps):
    if steps == 1:
        fractions = [1.0, 0.0]
    else:
        lin = steps // 2
        thr = 0.025
        # linear from 0 to thr over the first half, then the quadratic through (lin, thr) and (steps, 1)
        # whose slope at `lin` matches the linear part.
        quad_steps = steps - lin
        a = (lin - thr * steps) / (lin * quad_steps**2)
        b = thr / lin - 2 * (lin - thr * steps) / quad_steps**2
        c = a * lin**2
        ramp = [i * thr / lin for i in range(lin)] + [a * i * i + b * i + c for i in range(lin, steps)] + [1.0]
        assert ramp[lin] == pytest.approx(thr) and a * steps**2 + b * steps + c == pytest.approx(1.0)
        fractions = [1.0 - r for r in ramp]
    check(calculate_sigmas(MS, "linear_quadratic", steps), np.array(fractions) * np.float32(SMAX), rtol=1e-6)


@pytest.mark.parametrize("steps", [2, 5, 20])
def test_kl_optimal(steps):
    f = np.arange(steps) / (steps - 1)
    expected = np.tan(f * math.atan(SMIN) + (1 - f) * math.atan(SMAX))
    check(calculate_sigmas(MS, "kl_optimal", steps), list(expected) + [0.0], rtol=1e-5)


@pytest.mark.parametrize("name", [n for n in SCHEDULER_NAMES if n not in ("ddim_uniform", "beta")])
@pytest.mark.parametrize("steps", [3, 10, 33])
def test_every_scheduler_is_descending_with_steps_plus_one_sigmas_ending_in_zero(name, steps):
    sigmas = calculate_sigmas(MS, name, steps)
    assert sigmas.shape == (steps + 1,) and sigmas.dtype == torch.float32
    assert float(sigmas[-1]) == 0.0
    assert torch.all(sigmas[1:] < sigmas[:-1])
    assert float(sigmas[0]) == pytest.approx(SMAX, rel=1e-5)


def test_unknown_scheduler():
    with pytest.raises(ValueError, match="invalid scheduler"):
        calculate_sigmas(MS, "cosine", 10)


# -- KSampler's rules -----------------------------------------------------------------------------


def test_full_denoise_is_the_plain_schedule():
    assert torch.equal(sigmas_for(MS, "karras", 12), calculate_sigmas(MS, "karras", 12))
    assert torch.equal(sigmas_for(MS, "karras", 12, denoise=0.99995), calculate_sigmas(MS, "karras", 12))


def test_partial_denoise_keeps_the_last_steps_of_a_longer_schedule():
    s = sigmas_for(MS, "normal", 10, denoise=0.4)
    assert torch.equal(s, calculate_sigmas(MS, "normal", 25)[-11:])
    s = sigmas_for(MS, "karras", 7, denoise=0.3)  # int(7 / 0.3) = 23
    assert torch.equal(s, calculate_sigmas(MS, "karras", 23)[-8:])
    assert len(sigmas_for(MS, "normal", 10, denoise=0.0)) == 0


def test_discard_penultimate_sigma_samplers():
    assert DISCARD_PENULTIMATE_SIGMA_SAMPLERS == {"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}
    full = calculate_sigmas(MS, "normal", 11)
    for name in DISCARD_PENULTIMATE_SIGMA_SAMPLERS:
        s = sigmas_for(MS, "normal", 10, sampler_name=name)
        assert torch.equal(s, torch.cat([full[:-2], full[-1:]]))
        assert len(s) == 11
    assert torch.equal(sigmas_for(MS, "normal", 10, sampler_name="euler"), calculate_sigmas(MS, "normal", 10))
    # with denoise: the longer schedule is computed with the extra step too.
    long = calculate_sigmas(MS, "normal", 21)
    assert torch.equal(sigmas_for(MS, "normal", 10, sampler_name="dpm_2", denoise=0.5), torch.cat([long[:-2], long[-1:]])[-11:])


def test_ksampler_advanced_step_slicing():
    full = calculate_sigmas(MS, "karras", 20)
    # first stage: steps 0..12, leftover noise kept
    first = sigmas_for(MS, "karras", 20, start_step=0, last_step=12, force_full_denoise=False)
    assert torch.equal(first, full[:13])
    # ... or denoised fully: the last sigma becomes 0 (and the cached schedule is untouched)
    closed = sigmas_for(MS, "karras", 20, start_step=0, last_step=12, force_full_denoise=True)
    assert torch.equal(closed[:-1], full[:12]) and float(closed[-1]) == 0.0
    assert torch.equal(calculate_sigmas(MS, "karras", 20), full)
    # second stage
    assert torch.equal(sigmas_for(MS, "karras", 20, start_step=12, last_step=10000), full[12:])
    # end_at_step beyond the schedule does not cut (and does not force a zero)
    assert torch.equal(sigmas_for(MS, "karras", 20, last_step=10000, force_full_denoise=True), full)
    # start at or past the end: nothing to sample
    assert len(sigmas_for(MS, "karras", 20, start_step=20)) == 0
    assert len(sigmas_for(MS, "karras", 20, start_step=5, last_step=5)) == 0
