"""Samplers that integrate the probability-flow ODE with sigma as time (Karras et al. 2022):
Euler, Heun, the DPM-2 midpoint rule, their ancestral forms, Heun++ and linear multistep."""

from __future__ import annotations

import torch

from ._common import step_noise_sampler
from ._history import History
from ._run import SamplerRun, intervals
from ._steps import add_noise, ancestral_split, euler_move, slope, weighted_sum


def _churn_gamma(sigma, n_steps: int, s_churn: float, s_tmin: float, s_tmax: float) -> float:
    """Karras' gamma: the relative sigma increase of a churned step, at most sqrt(2) - 1, and
    only for sigmas inside [s_tmin, s_tmax]."""
    if s_tmin <= sigma <= s_tmax:
        return min(s_churn / n_steps, 2**0.5 - 1)
    return 0.0


def _churn(x, sigma, gamma: float, s_noise: float, noise=None):
    """Raise the noise level to sigma_hat = sigma (1 + gamma) by adding Gaussian noise (torch's
    global generator unless `noise` is given); returns (x, sigma_hat)."""
    sigma_hat = sigma * (gamma + 1)
    if gamma > 0:
        if noise is None:
            noise = torch.randn_like(x) * s_noise
        x = x + noise * (sigma_hat**2 - sigma**2) ** 0.5
    return x, sigma_hat


def _churned_denoise(run: SamplerRun, x, i: int, sigma, n_steps: int, s_churn: float, s_tmin: float, s_tmax: float,
                     s_noise: float):
    """The start of a churned step: raise x to sigma_hat (only when s_churn > 0), denoise there and
    report the step; returns (x, sigma_hat, denoised)."""
    gamma = _churn_gamma(sigma, n_steps, s_churn, s_tmin, s_tmax) if s_churn > 0 else 0.0
    x, sigma_hat = _churn(x, sigma, gamma, s_noise)
    denoised = run.denoise(x, sigma_hat)
    run.report(i, x, sigma, denoised, sigma_hat)
    return x, sigma_hat, denoised


def _log_midpoint(sigma_a, sigma_b):
    """The geometric mean of two sigmas (the midpoint in log sigma)."""
    return sigma_a.log().lerp(sigma_b.log(), 0.5).exp()


def _midpoint_move(run: SamplerRun, x, direction, sigma_from, sigma_to):
    """DPM-Solver-2-style step: take the slope at the log-midpoint and apply it over the whole step."""
    sigma_mid = _log_midpoint(sigma_from, sigma_to)
    x_mid = euler_move(x, direction, sigma_from, sigma_mid)
    mid_direction = slope(x_mid, sigma_mid, run.denoise(x_mid, sigma_mid))
    return euler_move(x, mid_direction, sigma_from, sigma_to)


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """First-order steps of the ODE (Karras et al. 2022, Algorithm 2 without its Heun correction),
    with optional churn."""
    run = SamplerRun(model, x, extra_args, callback)
    for i, sigma, sigma_next in intervals(sigmas):
        x, sigma_hat, denoised = _churned_denoise(run, x, i, sigma, len(sigmas) - 1, s_churn, s_tmin, s_tmax, s_noise)
        x = euler_move(x, slope(x, sigma_hat, denoised), sigma_hat, sigma_next)
    return x


@torch.no_grad()
def sample_euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None):
    """Euler down to sigma_down, then fresh noise of std sigma_up (a step that reaches sigma 0
    returns the prediction)."""
    run = SamplerRun(model, x, extra_args, callback)
    noise_sampler = step_noise_sampler(x, run.extra_args, noise_sampler)
    for i, sigma, sigma_next in intervals(sigmas):
        denoised = run.denoise(x, sigma)
        split = ancestral_split(sigma, sigma_next, eta)
        run.report(i, x, sigma, denoised)
        if split.sigma_down == 0:
            x = denoised
            continue
        x = euler_move(x, slope(x, sigma, denoised), sigma, split.sigma_down)
        x = add_noise(x, noise_sampler(sigma, sigma_next), s_noise, split.sigma_up)
    return x


@torch.no_grad()
def sample_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Heun's trapezoidal correction (Karras et al. 2022, Algorithm 2); the step to sigma 0 stays Euler."""
    run = SamplerRun(model, x, extra_args, callback)
    for i, sigma, sigma_next in intervals(sigmas):
        x, sigma_hat, denoised = _churned_denoise(run, x, i, sigma, len(sigmas) - 1, s_churn, s_tmin, s_tmax, s_noise)
        direction = slope(x, sigma_hat, denoised)
        predicted = euler_move(x, direction, sigma_hat, sigma_next)
        if sigma_next == 0:
            x = predicted
            continue
        end_direction = slope(predicted, sigma_next, run.denoise(predicted, sigma_next))
        x = euler_move(x, (direction + end_direction) / 2, sigma_hat, sigma_next)
    return x


@torch.no_grad()
def sample_heunpp2(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Heun++ (from sd-webui-samplers-scheduler): the slope is a weighted mean of the slopes at up to
    three successive schedule points, later points weighted sigma_k / (n sigma_0).  As in ComfyUI,
    every step draws one randn from torch's global generator, churned or not."""
    run = SamplerRun(model, x, extra_args, callback)
    sigma_end = sigmas[-1]
    for i, sigma, sigma_next in intervals(sigmas):
        gamma = _churn_gamma(sigma, len(sigmas) - 1, s_churn, s_tmin, s_tmax)
        x, sigma_hat = _churn(x, sigma, gamma, s_noise, noise=torch.randn_like(x) * s_noise)
        denoised = run.denoise(x, sigma_hat)
        direction = slope(x, sigma_hat, denoised)
        run.report(i, x, sigma, denoised, sigma_hat)
        if sigma_next == sigma_end:
            later_sigmas = []
        elif sigmas[i + 2] == sigma_end:
            later_sigmas = [sigma_next]
        else:
            later_sigmas = [sigma_next, sigmas[i + 2]]
        x = euler_move(x, _heunpp_slope(run, x, sigma_hat, direction, later_sigmas, sigmas[0]), sigma_hat, sigma_next)
    return x


def _heunpp_slope(run: SamplerRun, x, sigma_hat, direction, later_sigmas, sigma_first):
    """Heun++'s combined slope: Euler probes to each later sigma, then the weighted mean."""
    directions = [direction]
    probe, probe_sigma = x, sigma_hat
    for target in later_sigmas:
        probe = euler_move(probe, directions[-1], probe_sigma, target)
        probe_sigma = target
        directions.append(slope(probe, target, run.denoise(probe, target)))
    if not later_sigmas:
        return direction
    scale = len(directions) * sigma_first
    later_weights = [target / scale for target in later_sigmas]
    first_weight = 1
    for w in later_weights:
        first_weight = first_weight - w
    return weighted_sum([first_weight, *later_weights], directions)


@torch.no_grad()
def sample_dpm_2(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Second-order midpoint steps in log sigma (after DPM-Solver-2), with optional churn; the step
    to sigma 0 stays Euler."""
    run = SamplerRun(model, x, extra_args, callback)
    for i, sigma, sigma_next in intervals(sigmas):
        x, sigma_hat, denoised = _churned_denoise(run, x, i, sigma, len(sigmas) - 1, s_churn, s_tmin, s_tmax, s_noise)
        direction = slope(x, sigma_hat, denoised)
        if sigma_next == 0:
            x = euler_move(x, direction, sigma_hat, sigma_next)
        else:
            x = _midpoint_move(run, x, direction, sigma_hat, sigma_next)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None):
    """The DPM-2 midpoint step down to sigma_down, then fresh noise of std sigma_up."""
    run = SamplerRun(model, x, extra_args, callback)
    noise_sampler = step_noise_sampler(x, run.extra_args, noise_sampler)
    for i, sigma, sigma_next in intervals(sigmas):
        denoised = run.denoise(x, sigma)
        split = ancestral_split(sigma, sigma_next, eta)
        run.report(i, x, sigma, denoised)
        direction = slope(x, sigma, denoised)
        if split.sigma_down == 0:
            x = euler_move(x, direction, sigma, split.sigma_down)
            continue
        x = _midpoint_move(run, x, direction, sigma, split.sigma_down)
        x = add_noise(x, noise_sampler(sigma, sigma_next), s_noise, split.sigma_up)
    return x


def lms_coefficient(t, i: int, order: int, j: int) -> float:
    """The weight of the j-th newest slope in an `order`-step Adams-Bashforth step over
    [t_i, t_{i+1}]: the integral of its Lagrange basis polynomial on the nodes t_i, ..., t_{i-order+1}
    (scipy's adaptive quadrature to rel. tolerance 1e-4, as k-diffusion computes it)."""
    from scipy import integrate

    if order - 1 > i:
        raise ValueError(f"a {order}-step method needs {order - 1} earlier steps, step {i} has {i}")
    node = t[i - j]
    others = [t[i - k] for k in range(order) if k != j]

    def lagrange_basis(tau: float) -> float:
        value = 1.0
        for other in others:
            value *= (tau - other) / (node - other)
        return value

    return integrate.quad(lagrange_basis, t[i], t[i + 1], epsrel=1e-4)[0]


@torch.no_grad()
def sample_lms(model, x, sigmas, extra_args=None, callback=None, disable=None, order=4):
    """Linear multistep in sigma with up to `order` past slopes; the step to sigma 0 returns the prediction."""
    run = SamplerRun(model, x, extra_args, callback)
    nodes = sigmas.detach().cpu().numpy()
    slopes: History[torch.Tensor] = History(order)
    for i, sigma, sigma_next in intervals(sigmas):
        denoised = run.denoise(x, sigma)
        slopes.push(slope(x, sigma, denoised))
        run.report(i, x, sigma, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        weights = [lms_coefficient(nodes, i, len(slopes), j) for j in range(len(slopes))]
        x = x + sum(w * d for w, d in zip(weights, slopes.newest_first(), strict=True))
    return x
