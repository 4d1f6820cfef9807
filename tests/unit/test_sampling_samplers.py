"""Every KSampler sampler on an analytic denoiser (Gaussian data, see sampling_helpers):

- deterministic samplers (and the stochastic ones with their noise switched off) converge to the
  exact probability-flow ODE solution at the order their formula has: doubling the steps divides
  the error by ~2 (first order), ~4 (second order) or more;
- stochastic samplers end in the data distribution N(mu, s^2);
- ComfyUI's identities: ddim == euler, `_gpu` == plain on CPU, ddpm == euler_ancestral,
  CFG++ at cfg 1 == its plain sampler; step noise seeded seed + 1 (Brownian trees: seed).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from comfyserve.sampling.noise import BrownianTreeNoiseSampler, default_noise_sampler
from comfyserve.sampling.samplers import (
    INPAINT_RANDOM_NOISE_SAMPLERS,
    KSAMPLER_NAMES,
    SAMPLER_NAMES,
    SAMPLERS,
    ksampler_sample,
    max_denoise,
)
from comfyserve.sampling.schedulers import sigmas_for
from tests.conftest import reference
from tests.unit.sampling_helpers import MS, GaussianDenoiser, gaussian_denoised

pytestmark = pytest.mark.filterwarnings("ignore:Should have:UserWarning")  # torchsde's rounding of sigma_max

torch.manual_seed(0)
NOISE64 = torch.randn(2, 4, 16, 16, dtype=torch.float64)
torch.manual_seed(1)
NOISE32 = torch.randn(4, 4, 32, 32)


def test_names_are_comfyuis_in_order():
    ref = reference("object_info_full.json")["body"]
    for node in ("KSampler", "KSamplerAdvanced"):
        assert SAMPLER_NAMES == ref[node]["input"]["required"]["sampler_name"][0]
    assert SAMPLER_NAMES == KSAMPLER_NAMES + ["ddim", "uni_pc", "uni_pc_bh2"]
    assert list(SAMPLERS) == SAMPLER_NAMES
    assert INPAINT_RANDOM_NOISE_SAMPLERS == {"ddim"}


# -- convergence to the exact ODE solution --------------------------------------------------------

# name: (options, error bound at 40 karras steps, bound on err(40) / err(20) or None)
ODE_CASES = {
    "euler": ({}, 0.2, 0.6),
    "euler_cfg_pp": ({}, 0.2, 0.6),
    "ddim": ({}, 0.2, 0.6),
    "heunpp2": ({}, 0.17, 0.6),
    "gradient_estimation": ({}, 0.18, 0.65),
    "gradient_estimation_cfg_pp": ({}, 0.18, 0.65),
    "euler_ancestral": ({"eta": 0.0}, 0.2, 0.6),
    "heun": ({}, 0.02, 0.3),
    "exp_heun_2_x0": ({}, 0.02, 0.3),
    "exp_heun_2_x0_sde": ({"eta": 0.0}, 0.02, 0.3),
    "dpm_2": ({}, 0.011, 0.3),
    "dpm_2_ancestral": ({"eta": 0.0}, 0.011, 0.3),
    "dpmpp_2s_ancestral": ({"eta": 0.0}, 0.011, 0.3),
    "dpmpp_sde": ({"eta": 0.0}, 0.011, 0.3),
    "seeds_2": ({"eta": 0.0}, 0.011, 0.3),
    "dpmpp_2m": ({}, 0.02, 0.3),
    "dpmpp_2m_cfg_pp": ({}, 0.02, 0.3),
    "dpmpp_2m_sde": ({"eta": 0.0}, 0.02, 0.3),
    "dpmpp_2m_sde_heun": ({"eta": 0.0}, 0.03, 0.3),
    "res_multistep": ({}, 0.03, 0.3),
    "res_multistep_cfg_pp": ({}, 0.03, 0.3),
    "res_multistep_ancestral": ({"eta": 0.0}, 0.03, 0.3),
    "ipndm": ({}, 0.007, 0.3),
    "dpmpp_3m_sde": ({"eta": 0.0}, 0.004, 0.45),
    "lms": ({}, 0.004, 0.15),
    "deis": ({}, 0.0015, 0.2),
    "seeds_3": ({"eta": 0.0}, 6e-5, 0.2),
    "sa_solver": ({"tau_func": lambda sigma: 0.0}, 1e-3, 0.2),
    "sa_solver_pece": ({"tau_func": lambda sigma: 0.0}, 1e-4, 0.15),
    "ipndm_v": ({}, 2e-4, None),
    "uni_pc": ({}, 4e-3, None),
    "uni_pc_bh2": ({}, 4e-3, None),
    "dpm_fast": ({}, 1e-4, None),
}


def ode_error(name: str, steps: int, options: dict, s: float = 1.0) -> float:
    den = GaussianDenoiser(mu=0.3, s=s)
    sigmas = sigmas_for(MS, "karras", steps, sampler_name=name).double()
    last = float(sigmas[-2])
    if name in ("dpm_fast", "dpm_adaptive"):
        target = den.ode_solution(NOISE64, last)  # DPM-Solver stops at the last non-zero sigma
    elif name.startswith("uni_pc"):
        target = den.ode_solution(NOISE64, 0.001)  # UniPC replaces the final 0 with 0.001
    else:
        # exact flow down to the last non-zero sigma, then its denoised value (the step to 0)
        target = den.mu + NOISE64 * s**2 / (s**2 + last**2) ** 0.5
    out = SAMPLERS[name](den, den.start(NOISE64, sigmas[0]), sigmas, extra_args={"seed": 5}, **options)
    assert out.dtype == torch.float64 and out.shape == NOISE64.shape
    return float((out - target).abs().max())


@pytest.mark.parametrize("name", list(ODE_CASES))
def test_converges_to_the_ode_solution(name):
    options, bound, ratio = ODE_CASES[name]
    e10, e20, e40 = (ode_error(name, n, options) for n in (10, 20, 40))
    assert e40 < bound
    assert e40 < e10
    if ratio is not None:
        assert e40 / e20 < ratio


def test_ode_cases_cover_every_sampler():
    stochastic_only = {"euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp", "res_multistep_ancestral_cfg_pp", "dpmpp_sde_gpu",
                       "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "er_sde", "dpm_adaptive"}
    assert set(ODE_CASES) | stochastic_only == set(SAMPLERS)


def test_uni_pc_converges_fast_from_few_steps():
    for name in ("uni_pc", "uni_pc_bh2"):
        assert ode_error(name, 20, {}) < 0.15 * ode_error(name, 10, {})


def test_dpm_adaptive_meets_its_tolerance():
    den = GaussianDenoiser(mu=0.3, s=1.0)
    calls = {}
    for rtol, bound in ((0.05, 0.2), (1e-4, 1e-3)):
        den.calls = 0
        sigmas = sigmas_for(MS, "karras", 10).double()
        out = SAMPLERS["dpm_adaptive"](den, den.start(NOISE64, sigmas[0]), sigmas, rtol=rtol, atol=rtol / 10)
        assert float((out - den.ode_solution(NOISE64, float(sigmas[-2]))).abs().max()) < bound
        calls[rtol] = den.calls
    assert calls[1e-4] > 2 * calls[0.05]  # tighter tolerance, more steps: steps are its own choice


# -- stochastic samplers: the data distribution ---------------------------------------------------

STOCHASTIC = ["euler_ancestral", "euler_ancestral_cfg_pp", "exp_heun_2_x0_sde", "dpm_2_ancestral", "dpmpp_2s_ancestral",
              "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun",
              "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "res_multistep_ancestral",
              "res_multistep_ancestral_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece"]
SDE = {"dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu",
       "dpmpp_3m_sde", "dpmpp_3m_sde_gpu"}


def run(name, steps=30, seed=5, noise=NOISE32, scheduler="karras", den=None, **options):
    den = den or GaussianDenoiser(mu=0.3, s=0.5)
    sigmas = sigmas_for(MS, scheduler, steps, sampler_name=name)
    return SAMPLERS[name](den, den.start(noise, sigmas[0]), sigmas, extra_args={"seed": seed}, **options)


# ComfyUI 0.8's dpmpp_2s_ancestral_cfg_pp shifts its second stage by (first guided prediction -
# midpoint uncond), so even at cfg 1 it is not the plain sampler and over-disperses; its golden
# matches that form (see test_dpmpp_2s_ancestral_cfg_pp_step_formula).
EXACT_IN_DISTRIBUTION = [n for n in STOCHASTIC if n != "dpmpp_2s_ancestral_cfg_pp"]


@pytest.mark.parametrize("name", EXACT_IN_DISTRIBUTION)
def test_stochastic_sampler_ends_in_the_data_distribution(name):
    out = run(name, steps=100)
    assert torch.isfinite(out).all()
    assert abs(float(out.mean()) - 0.3) < 0.02
    assert abs(float(out.std()) / 0.5 - 1) < 0.07
    # fresh noise was injected: the result is (nearly) independent of the starting noise, unlike an ODE
    corr = float(torch.corrcoef(torch.stack([out.flatten(), NOISE32.flatten()]))[0, 1])
    assert corr < (0.7 if name == "er_sde" else 0.2)
    ode = float(torch.corrcoef(torch.stack([run("euler", steps=100).flatten(), NOISE32.flatten()]))[0, 1])
    assert ode > 0.99


@pytest.mark.parametrize("name", STOCHASTIC + ["lcm", "dpm_fast"])
def test_stochastic_sampler_is_reproducible_from_the_seed(name):
    a, b, c = run(name, seed=5), run(name, seed=5), run(name, seed=6)
    assert torch.equal(a, b)
    if name != "dpm_fast":  # dpm_fast draws noise but multiplies it by 0 (eta = 0)
        assert not torch.equal(a, c)


def test_ancestral_step_noise_is_seeded_with_seed_plus_one_on_cpu():
    sigmas = sigmas_for(MS, "karras", 8)
    den = GaussianDenoiser()
    x = den.start(NOISE32, sigmas[0])
    by_seed = SAMPLERS["euler_ancestral"](den, x, sigmas, extra_args={"seed": 100})
    gen = torch.Generator().manual_seed(101)
    explicit = SAMPLERS["euler_ancestral"](den, x, sigmas, extra_args={"seed": 100},
                                           noise_sampler=lambda s, sn: torch.randn(x.shape, generator=gen))
    assert torch.equal(by_seed, explicit)
    same_seed = torch.Generator().manual_seed(100)
    wrong = SAMPLERS["euler_ancestral"](den, x, sigmas, noise_sampler=lambda s, sn: torch.randn(x.shape, generator=same_seed))
    assert not torch.equal(by_seed, wrong)
    assert torch.equal(by_seed, SAMPLERS["euler_ancestral"](den, x, sigmas, noise_sampler=default_noise_sampler(x, 100)))


@pytest.mark.parametrize("name", sorted(SDE))
def test_sde_noise_is_a_brownian_tree_seeded_with_the_seed(name):
    sigmas = sigmas_for(MS, "karras", 8)
    den = GaussianDenoiser()
    x = den.start(NOISE32, sigmas[0])
    tree = BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=77, cpu=True)
    assert torch.equal(SAMPLERS[name](den, x, sigmas, extra_args={"seed": 77}), SAMPLERS[name](den, x, sigmas, noise_sampler=tree))


def test_euler_ancestral_step_formula():
    """Two steps written out: Euler to sigma_down, plus sigma_up * the seed + 1 generator's randn."""
    den = GaussianDenoiser()
    sigmas = torch.tensor([6.0, 2.0, 0.0])
    x0 = den.start(NOISE32, sigmas[0])
    out = SAMPLERS["euler_ancestral"](den, x0, sigmas, extra_args={"seed": 9})
    gen = torch.Generator().manual_seed(10)
    s0, s1 = 6.0, 2.0
    up = (s1**2 * (s0**2 - s1**2) / s0**2) ** 0.5
    down = (s1**2 - up**2) ** 0.5
    d0 = gaussian_denoised(x0, sigmas[:1], den.mu, den.s)
    x1 = x0 + (x0 - d0) / s0 * (down - s0) + torch.randn(x0.shape, generator=gen) * up
    x2 = gaussian_denoised(x1, sigmas[1:2], den.mu, den.s)
    torch.testing.assert_close(out, x2)


def test_lcm_jumps_to_the_prediction_and_renoises():
    den = GaussianDenoiser()
    sigmas = torch.tensor([8.0, 1.5, 0.0])
    x0 = den.start(NOISE32, sigmas[0])
    out = SAMPLERS["lcm"](den, x0, sigmas, extra_args={"seed": 3})
    gen = torch.Generator().manual_seed(4)
    x1 = gaussian_denoised(x0, sigmas[:1], den.mu, den.s) + 1.5 * torch.randn(x0.shape, generator=gen)
    torch.testing.assert_close(out, gaussian_denoised(x1, sigmas[1:2], den.mu, den.s))


# -- ComfyUI's identities -------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ["normal", "karras", "simple"])
def test_ddim_is_euler_bit_for_bit(scheduler):
    assert SAMPLERS["ddim"] is SAMPLERS["euler"]
    assert torch.equal(run("ddim", scheduler=scheduler), run("euler", scheduler=scheduler))


@pytest.mark.parametrize("name", sorted(SDE - {n for n in SDE if not n.endswith("_gpu")}))
def test_gpu_variants_equal_plain_variants_on_cpu(name):
    plain = name.removesuffix("_gpu")
    for scheduler in ("normal", "karras"):
        assert torch.equal(run(name, scheduler=scheduler), run(plain, scheduler=scheduler))
    assert not torch.equal(run("dpmpp_2m_sde"), run("dpmpp_2m_sde_heun"))


def test_ddpm_is_euler_ancestral_in_vp_form():
    torch.testing.assert_close(run("ddpm"), run("euler_ancestral"), rtol=0, atol=2e-5)


def test_deterministic_limits_of_ancestral_samplers():
    torch.testing.assert_close(run("euler_ancestral", eta=0.0), run("euler"), rtol=0, atol=2e-5)
    torch.testing.assert_close(run("dpm_2_ancestral", eta=0.0), run("dpm_2"), rtol=0, atol=2e-5)
    torch.testing.assert_close(run("dpmpp_2m_sde", eta=0.0), run("dpmpp_2m"), rtol=0, atol=2e-5)
    torch.testing.assert_close(run("exp_heun_2_x0_sde", eta=0.0), run("exp_heun_2_x0"), rtol=0, atol=2e-5)


# -- CFG++ ----------------------------------------------------------------------------------------

CFG_PP = {
    "euler_cfg_pp": "euler",
    "euler_ancestral_cfg_pp": "euler_ancestral",
    "dpmpp_2s_ancestral_cfg_pp": "dpmpp_2s_ancestral",
    "dpmpp_2m_cfg_pp": "dpmpp_2m",
    "res_multistep_cfg_pp": "res_multistep",
    "res_multistep_ancestral_cfg_pp": "res_multistep_ancestral",
    "gradient_estimation_cfg_pp": "gradient_estimation",
}


@pytest.mark.parametrize("name", [n for n in CFG_PP if n != "dpmpp_2s_ancestral_cfg_pp"])
def test_cfg_pp_at_cfg_1_is_the_plain_sampler(name):
    torch.testing.assert_close(run(name), run(CFG_PP[name]), rtol=0, atol=3e-5)


def test_dpmpp_2s_ancestral_cfg_pp_is_not_plain_at_cfg_1():
    """ComfyUI 0.8's quirk, kept: the second stage's shift uses the midpoint's uncond."""
    assert not torch.allclose(run("dpmpp_2s_ancestral_cfg_pp"), run("dpmpp_2s_ancestral"), atol=1e-3)
    assert torch.isfinite(run("dpmpp_2s_ancestral_cfg_pp", steps=100)).all()


@pytest.mark.parametrize("name", list(CFG_PP))
def test_cfg_pp_steps_with_the_unconditional_prediction(name):
    guided = GaussianDenoiser(mu=0.3, mu_uncond=-0.2, cfg=3.0)
    pp = run(name, den=guided)
    plain = run(CFG_PP[name], den=GaussianDenoiser(mu=0.3, mu_uncond=-0.2, cfg=3.0))
    assert torch.isfinite(pp).all() and not torch.allclose(pp, plain, atol=1e-3)


@pytest.mark.parametrize("name", list(CFG_PP))
def test_cfg_pp_hook_contract(name):
    seen = []

    class Recorder(GaussianDenoiser):
        def __call__(self, x, sigma, model_options=None, seed=None, denoise_mask=None):
            seen.append(model_options)
            return super().__call__(x, sigma, model_options=model_options, seed=seed)

    mine = {"sampler_post_cfg_function": [lambda args: args["denoised"]], "other": 1}
    extra = {"seed": 1, "model_options": mine}
    den = Recorder()
    sigmas = sigmas_for(MS, "karras", 4)
    SAMPLERS[name](den, den.start(NOISE32, sigmas[0]), sigmas, extra_args=extra)
    assert extra == {"seed": 1, "model_options": mine} and len(mine["sampler_post_cfg_function"]) == 1
    opts = seen[0]
    assert opts["disable_cfg1_optimization"] is True and opts["other"] == 1
    assert len(opts["sampler_post_cfg_function"]) == 2 and opts["sampler_post_cfg_function"][0] is mine["sampler_post_cfg_function"][0]

    def ignores_hooks(x, sigma, **kwargs):
        return gaussian_denoised(x, sigma, 0.3, 0.5)

    with pytest.raises(RuntimeError, match="sampler_post_cfg_function"):
        SAMPLERS[name](ignores_hooks, NOISE32 * 14.6, sigmas)


def test_euler_cfg_pp_step_formula():
    """x_{i+1} = D_guided + sigma_{i+1} * (x_i - D_uncond) / sigma_i, the last step lands on D_guided."""
    den = GaussianDenoiser(mu=0.3, mu_uncond=-0.2, cfg=2.5)
    sigmas = torch.tensor([5.0, 1.0, 0.0])
    x0 = den.start(NOISE32, sigmas[0])
    out = SAMPLERS["euler_cfg_pp"](den, x0, sigmas)

    def guided(x, s):
        c, u = gaussian_denoised(x, s, 0.3, 0.5), gaussian_denoised(x, s, -0.2, 0.5)
        return u + (c - u) * 2.5, u

    g0, u0 = guided(x0, sigmas[:1])
    x1 = g0 + 1.0 * (x0 - u0) / 5.0
    torch.testing.assert_close(out, guided(x1, sigmas[1:2])[0])


# -- call structure, callbacks, edge cases --------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in SAMPLER_NAMES if n not in ("dpm_fast", "dpm_adaptive")])
def test_callback_once_per_step(name):
    infos = []
    den = GaussianDenoiser()
    sigmas = sigmas_for(MS, "karras", 6, sampler_name=name)
    SAMPLERS[name](den, den.start(NOISE32, sigmas[0]), sigmas, extra_args={"seed": 1}, callback=infos.append)
    assert [info["i"] for info in infos] == list(range(len(sigmas) - 1))
    for info in infos:
        assert info["x"].shape == NOISE32.shape and info["denoised"].shape == NOISE32.shape
        if not name.startswith("uni_pc"):
            assert float(info["sigma"]) == float(sigmas[info["i"]])


def test_dpm_solver_callbacks_carry_sigma():
    infos = []
    den = GaussianDenoiser()
    sigmas = sigmas_for(MS, "karras", 9)
    SAMPLERS["dpm_fast"](den, den.start(NOISE32, sigmas[0]), sigmas, callback=infos.append)
    assert [i["i"] for i in infos] == list(range(len(infos))) and len(infos) == 4  # 9 evaluations: orders 3, 3, 2, 1
    assert float(infos[0]["sigma"]) == pytest.approx(float(sigmas[0]), rel=1e-5)
    assert den.calls == 9


@pytest.mark.parametrize(("name", "calls"), [("euler", 8), ("heun", 15), ("dpm_2", 15), ("dpmpp_2m", 8), ("dpmpp_sde", 15),
                                             ("seeds_3", 22), ("sa_solver_pece", 15), ("uni_pc", 8), ("heunpp2", 21)])
def test_model_evaluations_per_run(name, calls):
    den = GaussianDenoiser()
    sigmas = sigmas_for(MS, "karras", 8)
    SAMPLERS[name](den, den.start(NOISE32, sigmas[0]), sigmas, extra_args={"seed": 1})
    assert den.calls == calls


def test_heunpp2_draws_one_global_randn_per_step():
    sigmas = sigmas_for(MS, "karras", 5)
    den = GaussianDenoiser()
    x = den.start(NOISE32, sigmas[0])
    torch.manual_seed(123)
    SAMPLERS["heunpp2"](den, x, sigmas)
    after = torch.randn(1)
    torch.manual_seed(123)
    for _ in range(5):
        torch.randn_like(x)
    assert torch.equal(after, torch.randn(1))


def test_uni_pc_leaves_the_sigmas_alone():
    sigmas = sigmas_for(MS, "karras", 6, sampler_name="uni_pc")
    before = sigmas.clone()
    run("uni_pc")
    den = GaussianDenoiser()
    SAMPLERS["uni_pc"](den, den.start(NOISE32, sigmas[0]), sigmas)
    assert torch.equal(sigmas, before)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_float32_run_is_finite(name):
    out = run(name, steps=5, scheduler="normal")
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


# -- ksampler_sample: noise scaling around the sampler --------------------------------------------


def test_ksampler_sample_scales_the_noise_for_the_first_sigma():
    den = GaussianDenoiser()
    latent = torch.full_like(NOISE32, 0.1)
    starts = []

    def first_x(info):
        if info["i"] == 0:
            starts.append(info["x"])

    full = sigmas_for(MS, "normal", 10)
    assert max_denoise(MS, full)
    ksampler_sample("euler", den, NOISE32, latent, full, callback=first_x)
    torch.testing.assert_close(starts[0], NOISE32 * (1 + full[0] ** 2).sqrt() + latent)

    partial = sigmas_for(MS, "normal", 10, denoise=0.5)
    assert not max_denoise(MS, partial)
    out = ksampler_sample("euler", den, NOISE32, latent, partial, callback=first_x)
    torch.testing.assert_close(starts[1], NOISE32 * partial[0] + latent)
    assert out.shape == latent.shape

    assert ksampler_sample("euler", den, NOISE32, latent, torch.FloatTensor([])) is latent


# -- step formulas written out (float64) ----------------------------------------------------------


def _guided(x, sigma, cfg=2.5):
    s = torch.as_tensor(sigma, dtype=x.dtype).reshape(1)
    c, u = gaussian_denoised(x, s, 0.3, 0.5), gaussian_denoised(x, s, -0.2, 0.5)
    return u + (c - u) * cfg, u


def _pp_run(name, sigmas, **options):
    den = GaussianDenoiser(mu=0.3, mu_uncond=-0.2, cfg=2.5)
    sigmas = torch.tensor(sigmas, dtype=torch.float64)
    x0 = den.start(NOISE64, sigmas[0])
    return x0, SAMPLERS[name](den, x0, sigmas, extra_args={"seed": 2}, **options)


def test_dpmpp_2s_ancestral_cfg_pp_step_formula():
    """ComfyUI 0.8's form (checked against its golden): both stages start from x + (guided - the
    latest uncond), the second one after the midpoint evaluation has replaced the uncond."""
    x0, out = _pp_run("dpmpp_2s_ancestral_cfg_pp", [5.0, 1.0], eta=0.0)
    g0, u0 = _guided(x0, 5.0)
    s_mid = (5.0 * 1.0) ** 0.5  # midpoint in log sigma
    x_mid = s_mid / 5.0 * (x0 + g0 - u0) + (1 - s_mid / 5.0) * g0
    g_mid, u_mid = _guided(x_mid, s_mid)
    expected = 1.0 / 5.0 * (x0 + g0 - u_mid) + (1 - 1.0 / 5.0) * g_mid
    torch.testing.assert_close(out, expected)


def test_dpmpp_2m_cfg_pp_step_formula():
    sig = [6.0, 2.0, 0.5, 0.0]
    x, out = _pp_run("dpmpp_2m_cfg_pp", sig)
    g, u = _guided(x, sig[0])
    x = g + sig[1] / sig[0] * (x - u)  # first step: CFG++ DDIM
    old_u = u
    g, u = _guided(x, sig[1])
    h, h_last = torch.log(torch.tensor(sig[1] / sig[2])), torch.log(torch.tensor(sig[0] / sig[1]))
    r = h_last / h
    x = g + (sig[2] / sig[1]) * (x - u) + (1 - sig[2] / sig[1]) / (2 * r) * (g - old_u)
    g, u = _guided(x, sig[2])
    torch.testing.assert_close(out, g)  # the step to sigma 0 lands on the guided prediction


def test_gradient_estimation_cfg_pp_step_formula():
    sig = [6.0, 2.0, 0.5, 0.0]
    x, out = _pp_run("gradient_estimation_cfg_pp", sig)
    g, u = _guided(x, sig[0])
    d_old = (x - u) / sig[0]
    x = g + d_old * sig[1]
    g, u = _guided(x, sig[1])
    d = (x - u) / sig[1]
    x = g + d * sig[2] + (2.0 - 1) * (d - d_old) * (sig[2] - sig[1])
    torch.testing.assert_close(out, _guided(x, sig[2])[0])


def test_res_multistep_cfg_pp_step_formula():
    sig = [6.0, 2.0, 0.5, 0.0]
    x, out = _pp_run("res_multistep_cfg_pp", sig)
    g, u = _guided(x, sig[0])
    x = g + (x - u) / sig[0] * sig[1]  # first step: CFG++ Euler
    old_u = u
    g, u = _guided(x, sig[1])
    h = torch.log(torch.tensor(sig[1] / sig[2], dtype=torch.float64))
    c2 = -torch.log(torch.tensor(sig[0] / sig[1], dtype=torch.float64)) / h  # (t_prev - t_old) / h
    phi1 = torch.expm1(-h) / -h
    phi2 = (phi1 - 1) / -h
    b1, b2 = phi1 - phi2 / c2, phi2 / c2
    x = torch.exp(-h) * (x + g - u) + h * (b1 * u + b2 * old_u)
    torch.testing.assert_close(out, _guided(x, sig[2])[0])


def test_heunpp2_step_formula():
    sig = [6.0, 2.0, 0.5, 0.0]
    den = GaussianDenoiser()
    x = den.start(NOISE64, sig[0])
    out = SAMPLERS["heunpp2"](den, x, torch.tensor(sig, dtype=torch.float64))

    def d_at(x, s):
        return (x - gaussian_denoised(x, torch.tensor([s], dtype=x.dtype), den.mu, den.s)) / s

    # step 0: three derivatives, weights sigma_1 / (3 sigma_0), sigma_2 / (3 sigma_0)
    d1 = d_at(x, sig[0])
    x2 = x + d1 * (sig[1] - sig[0])
    d2 = d_at(x2, sig[1])
    x3 = x2 + d2 * (sig[2] - sig[1])
    d3 = d_at(x3, sig[2])
    w2, w3 = sig[1] / (3 * sig[0]), sig[2] / (3 * sig[0])
    x = x + ((1 - w2 - w3) * d1 + w2 * d2 + w3 * d3) * (sig[1] - sig[0])
    # step 1: two derivatives, weight sigma_2 / (2 sigma_0)
    d1 = d_at(x, sig[1])
    d2 = d_at(x + d1 * (sig[2] - sig[1]), sig[2])
    w2 = sig[2] / (2 * sig[0])
    x = x + (d1 * (1 - w2) + d2 * w2) * (sig[2] - sig[1])
    # step 2: Euler to 0
    x = x + d_at(x, sig[2]) * (0 - sig[2])
    torch.testing.assert_close(out, x)


def test_uni_pc_variants_differ():
    a, b = run("uni_pc"), run("uni_pc_bh2")
    assert not torch.allclose(a, b, atol=1e-5)


# -- the shared step helpers ----------------------------------------------------------------------


def test_ancestral_split_keeps_the_variance_of_sigma_to():
    from comfyserve.sampling.samplers._steps import ancestral_split

    s0, s1 = torch.tensor(6.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    down, up = ancestral_split(s0, s1, eta=1.0)
    torch.testing.assert_close(down**2 + up**2, s1**2)
    torch.testing.assert_close(up**2, s1**2 * (s0**2 - s1**2) / s0**2)  # DDPM's posterior variance
    half_down, half_up = ancestral_split(s0, s1, eta=0.5)
    assert float(half_up) == pytest.approx(0.5 * float(up)) and float(half_down) > float(down)
    assert ancestral_split(s0, s1, eta=0.0) == (s1, 0.0)
    capped_down, capped_up = ancestral_split(s0, s1, eta=100.0)  # never more noise than sigma_to
    assert float(capped_up) == 2.0 and float(capped_down) == 0.0


def test_log_snr_step_first_order_is_ddim_and_its_sde_form_keeps_the_marginal():
    from comfyserve.sampling.samplers._steps import LogSNRStep

    sigma, sigma_next = torch.tensor(3.0, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    x, x0 = NOISE64[:1] * 3.0 + 0.2, torch.full_like(NOISE64[:1], 0.2)
    ode = LogSNRStep(sigma, sigma_next)
    assert float(ode.h) == pytest.approx(math.log(6.0)) and float(ode.alpha_next) == pytest.approx(1.0)
    ratio = 0.5 / 3.0
    torch.testing.assert_close(ode.first_order(x, x0), ratio * x + (1 - ratio) * x0)  # DDIM
    for eta in (0.5, 1.0):
        sde = LogSNRStep(sigma, sigma_next, eta)
        x_weight = float(sde.x_decay(sigma_next))
        x0_weight = 1 - x_weight - float(sde.first_order(torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)) - x_weight)
        # x = x0 + sigma * e, exact prediction: mean stays x0, variance (x_weight sigma)^2 + (sigma_next * noise)^2 = sigma_next^2
        assert x_weight == pytest.approx(ratio * math.exp(-float(sde.h) * eta))
        assert x_weight + x0_weight == pytest.approx(1.0)
        assert (x_weight * 3.0) ** 2 + (0.5 * float(sde.relative_noise_std())) ** 2 == pytest.approx(0.25)
    mid_sigma, mid_alpha = ode.point(0.5)
    assert float(mid_sigma) == pytest.approx(math.sqrt(3.0 * 0.5)) and float(mid_alpha) == pytest.approx(1.0)


def test_history_keeps_the_newest_values():
    from comfyserve.sampling.samplers._history import History

    h = History(2)
    for v in (1, 2, 3):
        h.push(v)
    assert len(h) == 2 and h.back(1) == 3 and h.back(2) == 2
    assert h.newest_first() == [3, 2]
    with pytest.raises(IndexError):
        h.back(3)
    empty = History(0)
    empty.push(1)
    assert len(empty) == 0


def test_variable_step_adams_weights_reduce_to_the_equal_step_ones():
    from comfyserve.sampling.samplers.multistep import _EQUAL_STEP_WEIGHTS, _variable_step_weights

    equal = [torch.tensor(-0.5, dtype=torch.float64)] * 4
    for order, (weights, denominator) in _EQUAL_STEP_WEIGHTS.items():
        assert sum(weights) == denominator  # a constant slope is integrated exactly
        if order < 4:
            assert [float(w) for w in _variable_step_weights(equal, order)] == pytest.approx([w / denominator for w in weights])
    # iPNDM-v's fourth-order weights (kept as ComfyUI has them) are not AB4's on equal steps
    assert [float(w) for w in _variable_step_weights(equal, 4)] == pytest.approx([57 / 24, -65 / 24, 43 / 24, -11 / 24])
    # unequal steps: orders 2 and 3 stay exact for a constant slope (order 4 only nearly, as in ComfyUI)
    steps = [torch.tensor(v, dtype=torch.float64) for v in (-0.3, -0.5, -0.9, -1.4)]
    for order in (2, 3):
        assert float(sum(_variable_step_weights(steps, order))) == pytest.approx(1.0)
    assert float(sum(_variable_step_weights(steps, 4))) == pytest.approx(1.0, abs=5e-3)


def test_lms_coefficient_is_adams_bashforth_on_equal_steps():
    from comfyserve.sampling.samplers.classic import lms_coefficient

    t = np.array([5.0, 4.0, 3.0, 2.0])
    assert lms_coefficient(t, 0, 1, 0) == pytest.approx(-1.0)
    assert [lms_coefficient(t, 1, 2, j) for j in range(2)] == pytest.approx([-1.5, 0.5])
    with pytest.raises(ValueError):
        lms_coefficient(t, 0, 2, 0)


def test_deis_weights_integrate_to_the_sigma_step():
    from comfyserve.sampling.samplers.multistep import deis_coefficients

    sigmas = sigmas_for(MS, "karras", 6).double()
    weights = deis_coefficients(sigmas, max_order=3)
    assert weights[0] == [] and [len(w) for w in weights[1:]] == [2, 3, 3, 3, 3]
    for i in range(1, 5):  # the Lagrange polynomials sum to 1: the weights sum to the integral of dsigma
        assert float(sum(weights[i])) == pytest.approx(float(sigmas[i + 1] - sigmas[i]), rel=2e-3)


def test_seeds_stage_noise_is_one_brownian_path():
    from comfyserve.sampling.samplers._steps import LogSNRStep
    from comfyserve.sampling.samplers.stochastic import _StageNoise

    gen = torch.Generator().manual_seed(0)
    step = LogSNRStep(torch.tensor(4.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64), eta=1.0)
    stages = _StageNoise(step, lambda a, b: torch.randn(400_000, generator=gen, dtype=torch.float64), s_noise=1.0, enabled=True)
    zero = torch.zeros(400_000, dtype=torch.float64)
    first = stages.add(zero, 0.5, torch.tensor(1.0, dtype=torch.float64)).clone()
    last = stages.add(zero, 1.0, torch.tensor(1.0, dtype=torch.float64))
    assert float(first.std()) == pytest.approx(float(step.relative_noise_std(0.5)), rel=1e-2)
    assert float(last.std()) == pytest.approx(float(step.relative_noise_std(1.0)), rel=1e-2)  # the whole step's SDE noise
    expected_corr = math.exp(-0.5 * float(step.h)) * float(step.relative_noise_std(0.5)) / float(step.relative_noise_std(1.0))
    assert float(torch.corrcoef(torch.stack([first, last]))[0, 1]) == pytest.approx(expected_corr, abs=5e-3)
    assert _StageNoise(step, None, 1.0, enabled=False).add(zero, 0.5, step.sigma) is zero


def test_dpm_solver_step_shares_its_stage_evaluations():
    from comfyserve.sampling.samplers._run import SamplerRun
    from comfyserve.sampling.samplers.dpm_solver import _SingleStep

    den = GaussianDenoiser()
    x = den.start(NOISE64, 0.8)
    t, t_to = -torch.tensor(0.8, dtype=torch.float64).log(), -torch.tensor(0.6, dtype=torch.float64).log()
    step = _SingleStep(SamplerRun(den, x), x, t, t_to)
    low, high = step.update(2, r1=1 / 3), step.update(3)
    assert den.calls == 3  # start, 1/3 and 2/3: the order-3 update reuses the order-2 evaluations
    exact = den.ode_solution(NOISE64, 0.6)
    assert float((high - exact).abs().max()) < float((low - exact).abs().max()) < float((step.update(1) - exact).abs().max())


def test_step_size_controller_grows_on_small_errors_and_rejects_large_ones():
    from comfyserve.sampling.samplers.dpm_solver import _StepSizeController

    pid = _StepSizeController(0.1, pcoeff=0.0, icoeff=1.0, dcoeff=0.0, order=3)
    assert pid.propose(0.01) and pid.h > 0.1
    h = pid.h
    assert not pid.propose(100.0) and pid.h < h
    assert 1 - math.pi / 2 < pid.h / h < 1  # the arctan limiter bounds the change


def test_sampler_run_spreads_sigma_over_the_batch_and_reports_sigma_hat():
    from comfyserve.sampling.samplers._run import SamplerRun, intervals

    seen, infos = [], []
    run = SamplerRun(lambda x, sigma, **kw: seen.append((sigma, kw)) or x * 0, NOISE32, {"seed": 4}, infos.append)
    run.denoise(NOISE32, torch.tensor(2.5))
    assert torch.equal(seen[0][0], torch.full([NOISE32.shape[0]], 2.5)) and seen[0][1] == {"seed": 4}
    run.report(3, NOISE32, torch.tensor(2.5), NOISE32)
    run.report(4, NOISE32, torch.tensor(2.5), NOISE32, sigma_hat=torch.tensor(3.0))
    assert float(infos[0]["sigma_hat"]) == 2.5 and float(infos[1]["sigma_hat"]) == 3.0 and infos[1]["i"] == 4
    assert [(i, float(a), float(b)) for i, a, b in intervals(torch.tensor([3.0, 1.0, 0.0]))] == [(0, 3.0, 1.0), (1, 1.0, 0.0)]
