"""ModelSamplingDiscrete: the sigma table, timestep/sigma conversions and the EPS / V / X0
parameterisations, checked against values derived here from the formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from comfyserve.sampling.model_sampling import (
    EPS,
    V_PREDICTION,
    ModelSamplingDiscrete,
    make_model_sampling,
)


def reference_sigmas(start=0.00085, end=0.012, n=1000) -> np.ndarray:
    betas = np.linspace(start**0.5, end**0.5, n, dtype=np.float64) ** 2
    alphas_cumprod = np.cumprod(1.0 - betas)
    return np.sqrt((1.0 - alphas_cumprod) / alphas_cumprod)


@pytest.fixture(scope="module")
def ms():
    return make_model_sampling("eps")


def test_sigma_table_is_the_ldm_linear_schedule_in_float32(ms):
    ref = reference_sigmas()
    assert ms.sigmas.dtype == torch.float32 and ms.sigmas.shape == (1000,)
    np.testing.assert_array_equal(ms.sigmas.numpy(), ref.astype(np.float32))
    np.testing.assert_array_equal(ms.log_sigmas.numpy(), np.log(ref).astype(np.float32))
    # The well-known SD1.x range.
    assert float(ms.sigma_min) == pytest.approx(0.0291672, rel=1e-5)
    assert float(ms.sigma_max) == pytest.approx(14.614642, rel=1e-6)
    assert torch.all(ms.sigmas[1:] > ms.sigmas[:-1])


def test_other_settings_change_the_table():
    other = ModelSamplingDiscrete(linear_start=0.0001, linear_end=0.02)
    np.testing.assert_allclose(other.sigmas.numpy(), reference_sigmas(0.0001, 0.02), rtol=1e-6)


def test_timestep_is_the_nearest_entry_in_log_space(ms):
    idx = torch.arange(1000)
    assert torch.equal(ms.timestep(ms.sigmas), idx)
    log = ms.log_sigmas.double()
    # Just above / below the log-midpoint between entries 10 and 11.
    mid = (log[10] + log[11]) / 2
    assert int(ms.timestep((mid + 1e-4).exp().float())) == 11
    assert int(ms.timestep((mid - 1e-4).exp().float())) == 10
    # Far outside the table: clamped to the ends; shape is preserved and the result is an index.
    t = ms.timestep(torch.tensor([[100.0, 1e-4]]))
    assert t.shape == (1, 2) and t.dtype == torch.int64 and t.tolist() == [[999, 0]]


def test_sigma_interpolates_log_sigma_between_entries(ms):
    log = ms.log_sigmas.double()
    for t in (0.0, 10.25, 499.5, 998.9, 999.0):
        lo, hi = math.floor(t), math.ceil(t)
        w = t - lo
        expected = math.exp((1 - w) * log[lo] + w * log[hi])
        assert float(ms.sigma(torch.tensor(t))) == pytest.approx(expected, rel=2e-6)
    # exp(log) in float32: within an ulp or two of the table.
    assert float(ms.sigma(torch.tensor(-5.0))) == pytest.approx(float(ms.sigma_min), rel=2e-7)
    assert float(ms.sigma(torch.tensor(2000.0))) == pytest.approx(float(ms.sigma_max), rel=2e-7)
    torch.testing.assert_close(ms.sigma(torch.arange(1000)), ms.sigmas, rtol=3e-7, atol=0)


def test_percent_to_sigma(ms):
    assert ms.percent_to_sigma(0.0) == 999999999.9
    assert ms.percent_to_sigma(-1.0) == 999999999.9
    assert ms.percent_to_sigma(1.0) == 0.0
    assert ms.percent_to_sigma(0.5) == pytest.approx(float(ms.sigma(torch.tensor(499.5))))
    assert ms.percent_to_sigma(0.2) > ms.percent_to_sigma(0.8) > 0


def test_eps_parameterisation_recovers_x0_from_the_true_noise(ms):
    assert isinstance(ms, EPS) and ms.prediction == "eps"
    torch.manual_seed(1)
    x0, eps = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    sigma = torch.tensor([0.5, 7.0])
    x = x0 + eps * sigma.view(2, 1, 1, 1)
    torch.testing.assert_close(ms.calculate_denoised(sigma, eps, x), x0)
    torch.testing.assert_close(ms.calculate_input(sigma, x), x / (sigma.view(2, 1, 1, 1) ** 2 + 1).sqrt())


def test_v_parameterisation_recovers_x0_from_the_true_velocity():
    ms = make_model_sampling("v")
    assert isinstance(ms, V_PREDICTION) and ms.prediction == "v"
    torch.manual_seed(2)
    x0, eps = torch.randn(2, 4, 3, 3, dtype=torch.float64), torch.randn(2, 4, 3, 3, dtype=torch.float64)
    sigma = torch.tensor([0.3, 9.0], dtype=torch.float64)
    s = sigma.view(2, 1, 1, 1)
    alpha_vp, sigma_vp = 1 / (1 + s**2).sqrt(), s / (1 + s**2).sqrt()
    v = alpha_vp * eps - sigma_vp * x0
    x = x0 + s * eps
    torch.testing.assert_close(ms.calculate_denoised(sigma, v, x), x0)


def test_x0_parameterisation_passes_the_prediction_through():
    ms = make_model_sampling("x0")
    out = torch.randn(1, 4, 2, 2)
    assert torch.equal(ms.calculate_denoised(torch.tensor([3.0]), out, torch.zeros_like(out)), out)


def test_noise_scaling_and_inverse(ms):
    noise = torch.ones(1, 4, 2, 2)
    latent = torch.full((1, 4, 2, 2), 0.25)
    sigma = torch.tensor(3.0)
    torch.testing.assert_close(ms.noise_scaling(sigma, noise, latent), torch.full_like(noise, 3.25))
    torch.testing.assert_close(ms.noise_scaling(sigma, noise, latent, max_denoise=True), torch.full_like(noise, math.sqrt(10) + 0.25))
    assert torch.equal(noise, torch.ones(1, 4, 2, 2))  # the input noise is not modified
    assert ms.inverse_noise_scaling(sigma, latent) is latent


def test_zero_terminal_snr_pins_the_last_sigma():
    ms = make_model_sampling("v", zsnr=True)
    assert float(ms.sigma_max) == pytest.approx(math.sqrt((1 - 4.8973451890853435e-08) / 4.8973451890853435e-08), rel=1e-5)
    assert float(ms.sigma_min) == pytest.approx(0.0291672, rel=1e-4)


def test_unknown_prediction_type():
    with pytest.raises(ValueError):
        make_model_sampling("flow")
