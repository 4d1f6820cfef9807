"""DPM-Solver++ (Lu et al. 2022, arXiv:2211.01095): exponential integrators of the data prediction in
half-log-SNR time.  Single-step 2S (ancestral) and SDE, multistep 2M, and the multistep SDE forms
2M (midpoint / Heun correction) and 3M.  The SDE samplers draw from a Brownian tree (on the CPU, or
on x's device for the `_gpu` names)."""

from __future__ import annotations

import torch

from ._common import brownian_noise_sampler, model_sampling_of, noise_scale_of, step_noise_sampler
from ._history import History
from ._run import SamplerRun, intervals
from ._steps import (
    LogSNRStep,
    add_noise,
    ancestral_split,
    euler_move,
    exponential_update,
    h_phi_1,
    half_log_snr,
    sigma_at,
    slope,
)


def _sigma_ratio(lam_from, lam_to):
    """sigma(lam_to) / sigma(lam_from), the x weight of a noise-free step in VE space."""
    return sigma_at(lam_to) / sigma_at(lam_from)


def two_stage_step(run: SamplerRun, x, denoised, sigma, sigma_to, origin=None):
    """DPM-Solver++(2S): a first-order step to the log-SNR midpoint, then the whole step with the
    midpoint's prediction.  `origin()`, when given, is the point each stage starts from instead of x
    (it is asked again after the midpoint evaluation)."""
    lam, lam_to = half_log_snr(sigma), half_log_snr(sigma_to)
    h = lam_to - lam
    lam_mid = lam + 0.5 * h
    start = x if origin is None else origin()
    x_mid = exponential_update(start, denoised, _sigma_ratio(lam, lam_mid), h_phi_1(-(h * 0.5)))
    denoised_mid = run.denoise(x_mid, sigma_at(lam_mid))
    start = x if origin is None else origin()
    return exponential_update(start, denoised_mid, _sigma_ratio(lam, lam_to), h_phi_1(-h))


@torch.no_grad()
def sample_dpmpp_2s_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None):
    """DPM-Solver++(2S) down to sigma_down, then fresh noise of std sigma_up (none at the end)."""
    run = SamplerRun(model, x, extra_args, callback)
    noise_sampler = step_noise_sampler(x, run.extra_args, noise_sampler)
    for i, sigma, sigma_next in intervals(sigmas):
        denoised = run.denoise(x, sigma)
        split = ancestral_split(sigma, sigma_next, eta)
        run.report(i, x, sigma, denoised)
        if split.sigma_down == 0:
            x = euler_move(x, slope(x, sigma, denoised), sigma, split.sigma_down)
        else:
            x = two_stage_step(run, x, denoised, sigma, split.sigma_down)
        if sigma_next > 0:
            x = add_noise(x, noise_sampler(sigma, sigma_next), s_noise, split.sigma_up)
    return x


def _ancestral_exponential_stage(x, denoised, lam, alpha, lam_to, alpha_to, eta):
    """A first-order exponential step from lam towards lam_to that stops at the ancestral sigma_down
    (in the alpha-scaled frame); returns (x, sigma_up) - the caller adds the noise."""
    split = ancestral_split(sigma_at(lam), sigma_at(lam_to), eta)
    h = half_log_snr(split.sigma_down) - lam
    return exponential_update(x, denoised, (alpha_to / alpha) * (-h).exp(), alpha_to * h_phi_1(-h)), split.sigma_up


def _dpmpp_sde(model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, r, cpu_tree):
    if len(sigmas) <= 1:
        return x
    run = SamplerRun(model, x, extra_args, callback)
    noise_sampler = brownian_noise_sampler(x, sigmas, run.extra_args, noise_sampler, cpu=cpu_tree)
    s_noise = s_noise * noise_scale_of(model_sampling_of(model))
    add_sde_noise = eta > 0 and s_noise > 0
    blend = 1 / (2 * r)
    for i, sigma, sigma_next in intervals(sigmas):
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        step = LogSNRStep(sigma, sigma_next)
        lam_mid = step.lam + r * step.h
        sigma_mid = sigma_at(lam_mid)
        alpha_mid = sigma_mid * lam_mid.exp()

        x_mid, sigma_up = _ancestral_exponential_stage(x, denoised, step.lam, step.alpha, lam_mid, alpha_mid, eta)
        if add_sde_noise:
            x_mid = add_noise(x_mid, alpha_mid * noise_sampler(sigma, sigma_mid), s_noise, sigma_up)
        denoised_mid = run.denoise(x_mid, sigma_mid)

        blended = (1 - blend) * denoised + blend * denoised_mid
        x, sigma_up = _ancestral_exponential_stage(x, blended, step.lam, step.alpha, step.lam_next, step.alpha_next, eta)
        if add_sde_noise:
            x = add_noise(x, step.alpha_next * noise_sampler(sigma, sigma_next), s_noise, sigma_up)
    return x


@torch.no_grad()
def sample_dpmpp_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None, r=1 / 2):
    """DPM-Solver++ SDE: two stochastic stages per step (the first to lambda + r h), the second with
    the predictions blended 1 - 1/(2r) : 1/(2r); Brownian-tree noise on the CPU."""
    return _dpmpp_sde(model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, r, cpu_tree=True)


@torch.no_grad()
def sample_dpmpp_sde_gpu(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None, r=1 / 2):
    """`dpmpp_sde` with the Brownian tree on x's device."""
    return _dpmpp_sde(model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, r, cpu_tree=False)


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """DPM-Solver++(2M): each step extrapolates the prediction linearly in lambda from the previous
    one; the first step and the step to sigma 0 are first order."""
    run = SamplerRun(model, x, extra_args, callback)
    previous = None
    for i, sigma, sigma_next in intervals(sigmas):
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, denoised)
        lam, lam_next = half_log_snr(sigma), half_log_snr(sigma_next)
        h = lam_next - lam
        target = denoised
        if previous is not None and sigma_next != 0:
            step_ratio = (lam - half_log_snr(sigmas[i - 1])) / h
            target = (1 + 1 / (2 * step_ratio)) * denoised - (1 / (2 * step_ratio)) * previous
        x = exponential_update(x, target, _sigma_ratio(lam, lam_next), h_phi_1(-h))
        previous = denoised
    return x


# -- multistep SDE (2M / 3M) ----------------------------------------------------------------------
#
# Both start from the first-order SDE update and add corrections built from earlier predictions;
# `history` holds (prediction, h) of the previous steps, newest first via `back`.


def _midpoint_correction(x, step: LogSNRStep, denoised, history: History):
    if not history:
        return x
    previous, h_previous = history.back(1)
    step_ratio = h_previous / step.h
    return x - 0.5 * step.alpha_next * step.phi_1() * (1 / step_ratio) * (denoised - previous)


def _heun_correction(x, step: LogSNRStep, denoised, history: History):
    if not history:
        return x
    previous, h_previous = history.back(1)
    step_ratio = h_previous / step.h
    return x + step.alpha_next * step.slope_weight() * (1 / step_ratio) * (denoised - previous)


def _third_order_correction(x, step: LogSNRStep, denoised, history: History):
    """First and second divided differences of the last three predictions (only the first when
    there are two)."""
    if not history:
        return x
    weight_1 = step.slope_weight()
    previous, h_previous = history.back(1)
    ratio_1 = h_previous / step.h
    diff_newest = (denoised - previous) / ratio_1
    if len(history) == 1:
        return x + (step.alpha_next * weight_1) * diff_newest
    older, h_older = history.back(2)
    ratio_2 = h_older / step.h
    diff_older = (previous - older) / ratio_2
    first_derivative = diff_newest + (diff_newest - diff_older) * ratio_1 / (ratio_1 + ratio_2)
    second_derivative = (diff_newest - diff_older) / (ratio_1 + ratio_2)
    weight_2 = weight_1 / step.h_eta - 0.5
    return x + (step.alpha_next * weight_1) * first_derivative - (step.alpha_next * weight_2) * second_derivative


def _multistep_sde(model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, cpu_tree, correction, memory):
    if len(sigmas) <= 1:
        return x
    run = SamplerRun(model, x, extra_args, callback)
    noise_sampler = brownian_noise_sampler(x, sigmas, run.extra_args, noise_sampler, cpu=cpu_tree)
    s_noise = s_noise * noise_scale_of(model_sampling_of(model))
    history: History[tuple[torch.Tensor, torch.Tensor | None]] = History(memory)
    h_last = None  # a step that lands on sigma 0 keeps the previous h (ComfyUI's bookkeeping)
    for i, sigma, sigma_next in intervals(sigmas):
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, denoised)
        if sigma_next == 0:
            x = denoised
        else:
            step = LogSNRStep(sigma, sigma_next, eta)
            x = correction(step.first_order(x, denoised), step, denoised, history)
            if eta > 0 and s_noise > 0:
                x = x + noise_sampler(sigma, sigma_next) * sigma_next * step.relative_noise_std() * s_noise
            h_last = step.h
        history.push((denoised, h_last))
    return x


_SOLVER_CORRECTIONS = {"midpoint": _midpoint_correction, "heun": _heun_correction}


def _dpmpp_2m_sde(model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, solver_type, cpu_tree):
    if len(sigmas) > 1 and solver_type not in _SOLVER_CORRECTIONS:
        raise ValueError("solver_type must be 'heun' or 'midpoint'")
    return _multistep_sde(model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, cpu_tree,
                          _SOLVER_CORRECTIONS.get(solver_type), memory=1)


@torch.no_grad()
def sample_dpmpp_2m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None,
                        solver_type="midpoint"):
    """DPM-Solver++(2M) SDE with the midpoint (default) or Heun form of the second-order term."""
    return _dpmpp_2m_sde(model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, solver_type, cpu_tree=True)


@torch.no_grad()
def sample_dpmpp_2m_sde_gpu(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None,
                            solver_type="midpoint"):
    return _dpmpp_2m_sde(model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, solver_type, cpu_tree=False)


@torch.no_grad()
def sample_dpmpp_2m_sde_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None,
                             solver_type="heun"):
    return _dpmpp_2m_sde(model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, solver_type, cpu_tree=True)


@torch.no_grad()
def sample_dpmpp_2m_sde_heun_gpu(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None,
                                 solver_type="heun"):
    return _dpmpp_2m_sde(model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, solver_type, cpu_tree=False)


@torch.no_grad()
def sample_dpmpp_3m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None):
    """DPM-Solver++(3M) SDE: third order from the third step on (second order on the second)."""
    return _multistep_sde(model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, True, _third_order_correction, memory=2)


@torch.no_grad()
def sample_dpmpp_3m_sde_gpu(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None):
    return _multistep_sde(model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, False, _third_order_correction, memory=2)
