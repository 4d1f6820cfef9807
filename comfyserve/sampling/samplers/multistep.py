"""Multistep samplers that reuse earlier evaluations: iPNDM and iPNDM-v (Adams-Bashforth on the
sigma-time ODE with fixed / variable-step weights), DEIS (weights integrated in a VP time),
RES multistep (second-order exponential multistep, arXiv:2308.02157) and the gradient-estimation
sampler (Euler plus a multiple of the slope's change)."""

from __future__ import annotations

import torch

from ._common import guided_run, model_sampling_of, noise_scale_of, step_noise_sampler
from ._history import History
from ._run import SamplerRun, intervals
from ._steps import add_noise, ancestral_split, euler_move, h_phi_1, half_log_snr, slope, weighted_sum

# -- iPNDM ----------------------------------------------------------------------------------------

# Adams-Bashforth weights for equal steps, newest slope first, and their common denominator.
_EQUAL_STEP_WEIGHTS = {
    1: ((1,), 1),
    2: ((3, -1), 2),
    3: ((23, -16, 5), 12),
    4: ((55, -59, 37, -9), 24),
}


def _variable_step_weights(h: list, order: int) -> list:
    """Adams-Bashforth weights (newest slope first) for unequal steps; h[0] is the step being
    taken and h[1], h[2], h[3] the earlier ones, newest first (as iPNDM-v derives them)."""
    if order == 1:
        return [1]
    q = h[0] / h[1]
    base = [(2 + q) / 2, -q / 2]
    if order == 2:
        return base
    s01, s12 = h[0] + h[1], h[1] + h[2]
    p = h[1] / h[2]
    t1 = (1 - h[0] / (3 * s01) * (h[0] * s01) / (h[1] * s12)) / 2
    if order == 3:
        return [base[0] + t1, base[1] - (1 + p) * t1, t1 * h[1] / h[2]]
    s012, s123, s23 = s01 + h[2], s12 + h[3], h[2] + h[3]
    t2 = ((1 - h[0] / (3 * s01)) / 2 + (1 - h[0] / (2 * s01)) * h[0] / (6 * s012)) * (h[0] * s01 * s012) / (h[1] * s12 * s123)
    ratio = h[1] * s12 / (h[2] * s23)
    return [
        base[0] + t1 + t2,
        base[1] - (1 + p) * t1 - (1 + p + ratio) * t2,
        t1 * h[1] / h[2] + (p + ratio * (1 + h[2] / h[3])) * t2,
        -t2 * ratio * h[1] / h[2],
    ]


def _ipndm(model, x, sigmas, extra_args, callback, max_order: int, variable_steps: bool):
    """iPNDM (diff-solvers): order min(i + 1, max_order) Adams-Bashforth on the slopes; the step to
    sigma 0 returns the prediction."""
    run = SamplerRun(model, x, extra_args, callback)
    sampler_input = x  # ComfyUI reports the sampler's input as "x" on every step of these samplers
    slopes: History[torch.Tensor] = History(max_order - 1)
    for i, sigma, sigma_next in intervals(sigmas):
        denoised = run.denoise(x, sigma)
        run.report(i, sampler_input, sigma, denoised)
        direction = slope(x, sigma, denoised)
        order = min(max_order, i + 1)
        recent = [direction] + slopes.newest_first()
        if sigma_next == 0:
            x = denoised
        elif variable_steps:
            earlier_steps = [sigmas[i - k] - sigmas[i - k - 1] for k in range(order - 1)]
            weights = _variable_step_weights([sigma_next - sigma, *earlier_steps], order)
            x = x + (sigma_next - sigma) * weighted_sum(weights, recent[:order])
        else:
            weights, denominator = _EQUAL_STEP_WEIGHTS[order]
            x = x + (sigma_next - sigma) * weighted_sum(weights, recent[:order]) / denominator
        slopes.push(direction)
    return x


@torch.no_grad()
def sample_ipndm(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=4):
    """Improved PNDM with the equal-step Adams-Bashforth weights of orders 1-4."""
    return _ipndm(model, x, sigmas, extra_args, callback, max_order, variable_steps=False)


@torch.no_grad()
def sample_ipndm_v(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=4):
    """Improved PNDM with Adams-Bashforth weights for the schedule's actual (unequal) steps."""
    return _ipndm(model, x, sigmas, extra_args, callback, max_order, variable_steps=True)


# -- DEIS -----------------------------------------------------------------------------------------


def _vp_time(sigmas: torch.Tensor, epsilon_s: float = 1e-3, sigma_min: float = 0.002, sigma_max: float = 80.0):
    """The sigmas as times of the VP SDE whose noise runs from sigma_min = 0.002 at t = epsilon_s to
    sigma_max = 80 at t = 1 (DEIS's fixed reference, not the model's schedule).
    Returns (t, beta_0, beta_1) in float32 on the CPU."""
    log_var_min = torch.log(torch.tensor(sigma_min) ** 2 + 1)
    log_var_max = torch.log(torch.tensor(sigma_max) ** 2 + 1)
    beta_slope = 2 * (log_var_min / epsilon_s - log_var_max) / (epsilon_s - 1)
    beta_0 = log_var_max - 0.5 * beta_slope
    s = sigmas.detach().cpu()
    t = ((beta_0**2 + 2 * beta_slope * (s**2 + 1).log()).sqrt() - beta_0) / beta_slope
    return t, beta_0, beta_slope + beta_0


def _deis_integrand(taus: torch.Tensor, beta_0, beta_1) -> torch.Tensor:
    """The exponential-integrator weight of the noise prediction at VP times `taus`:
    -(d log alpha / dtau) / (2 sqrt(alpha (1 - alpha))), alpha(tau) = exp(-tau^2 (beta_1 - beta_0) / 2 - tau beta_0)."""
    alpha = torch.exp(-0.5 * taus**2 * (beta_1 - beta_0) - taus * beta_0)
    d_log_alpha = -taus * (beta_1 - beta_0) - beta_0
    return -0.5 * d_log_alpha / torch.sqrt(alpha * (1 - alpha))


def _lagrange_basis(nodes: torch.Tensor, j: int, taus: torch.Tensor):
    """The Lagrange polynomial that is 1 at nodes[j] and 0 at the other nodes, evaluated at `taus`."""
    value = 1
    for k in range(nodes.shape[0]):
        if k != j:
            value = value * (taus - nodes[k]) / (nodes[j] - nodes[k])
    return value


def deis_coefficients(sigmas: torch.Tensor, max_order: int, n_points: int = 10000) -> list[list[torch.Tensor]]:
    """DEIS tAB weights per step (empty for first-order steps): the integrals over the step, as a
    Riemann sum with n_points, of the integrand times each past time's Lagrange polynomial, newest first."""
    times, beta_0, beta_1 = _vp_time(sigmas)
    weights: list[list[torch.Tensor]] = []
    for i in range(len(times) - 1):
        order = min(i + 1, max_order)
        if order == 1:
            weights.append([])
            continue
        start, end = times[i], times[i + 1]
        taus = torch.linspace(start, end, n_points)
        dtau = (end - start) / n_points
        nodes = times[[i - k for k in range(order)]]
        integrand = _deis_integrand(taus, beta_0, beta_1)
        weights.append([torch.sum(integrand * _lagrange_basis(nodes, j, taus)) * dtau for j in range(order)])
    return weights


@torch.no_grad()
def sample_deis(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=3):
    """DEIS (tAB) with up to `max_order` slopes; first-order steps (the first one and the step to
    sigma 0) are Euler steps."""
    run = SamplerRun(model, x, extra_args, callback)
    sampler_input = x
    step_weights = deis_coefficients(sigmas, max_order)
    slopes: History[torch.Tensor] = History(max_order - 1)
    for i, sigma, sigma_next in intervals(sigmas):
        denoised = run.denoise(x, sigma)
        run.report(i, sampler_input, sigma, denoised)
        direction = slope(x, sigma, denoised)
        if sigma_next <= 0 or i == 0 or max_order < 2:
            x = euler_move(x, direction, sigma, sigma_next)
        else:
            weights = [w.to(x.device) for w in step_weights[i]]
            x = x + weights[0] * direction
            for k, w in enumerate(weights[1:], start=1):
                x = x + w * slopes.back(k)
        slopes.push(direction)
    return x


# -- RES multistep --------------------------------------------------------------------------------


def _phi_1(z):
    """phi_1(z) = (e^z - 1) / z."""
    return h_phi_1(z) / z


def _res_step(x, h, c2, current, previous):
    """The second-order exponential multistep update over half-log-SNR step h with the previous
    prediction at relative position c2: e^-h x + h (b1 current + b2 previous), b2 = phi_2 / c2,
    with phi_2(z) = (phi_1(z) - 1) / z."""
    phi_1 = _phi_1(-h)
    phi_2_over_c2 = (phi_1 - 1.0) / -h / c2
    b1 = torch.nan_to_num(phi_1 - phi_2_over_c2, nan=0.0)
    b2 = torch.nan_to_num(phi_2_over_c2, nan=0.0)
    return (-h).exp() * x + h * (b1 * current + b2 * previous)


@torch.no_grad()
def res_multistep(model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1.0, noise_sampler=None, eta=1.0, cfg_pp=False):
    """RES multistep towards the ancestral sigma_down (eta > 0 adds the noise, eta = 0 is the ODE
    form); the first step and a step down to sigma 0 are Euler.  `cfg_pp` steps along the
    unconditional prediction and shifts x by (guided - unconditional)."""
    noise_sampler = step_noise_sampler(x, extra_args or {}, noise_sampler)
    s_noise = s_noise * noise_scale_of(model_sampling_of(model))
    run, uncond = guided_run(model, x, extra_args, callback, cfg_pp)
    previous = None  # (prediction, sigma_down) of the previous step
    for i, sigma, sigma_next in intervals(sigmas):
        denoised = run.denoise(x, sigma)
        stepped = uncond.get() if cfg_pp else denoised
        split = ancestral_split(sigma, sigma_next, eta)
        run.report(i, x, sigma, denoised)
        if split.sigma_down == 0 or previous is None:
            if cfg_pp:
                x = denoised + slope(x, sigma, stepped) * split.sigma_down
            else:
                x = euler_move(x, slope(x, sigma, denoised), sigma, split.sigma_down)
        else:
            previous_prediction, previous_sigma_down = previous
            lam = half_log_snr(sigma)
            h = half_log_snr(split.sigma_down) - lam
            c2 = (half_log_snr(sigmas[i - 1]) - half_log_snr(previous_sigma_down)) / h
            if cfg_pp:
                x = x + (denoised - stepped)
            x = _res_step(x, h, c2, stepped, previous_prediction)
        if sigma_next > 0:
            x = add_noise(x, noise_sampler(sigma, sigma_next), s_noise, split.sigma_up)
        previous = (stepped, split.sigma_down)
    return x


@torch.no_grad()
def sample_res_multistep(model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1.0, noise_sampler=None):
    return res_multistep(model, x, sigmas, extra_args, callback, disable, s_noise, noise_sampler, eta=0.0, cfg_pp=False)


@torch.no_grad()
def sample_res_multistep_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1.0, noise_sampler=None):
    return res_multistep(model, x, sigmas, extra_args, callback, disable, s_noise, noise_sampler, eta=0.0, cfg_pp=True)


@torch.no_grad()
def sample_res_multistep_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None):
    return res_multistep(model, x, sigmas, extra_args, callback, disable, s_noise, noise_sampler, eta=eta, cfg_pp=False)


@torch.no_grad()
def sample_res_multistep_ancestral_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None):
    return res_multistep(model, x, sigmas, extra_args, callback, disable, s_noise, noise_sampler, eta=eta, cfg_pp=True)


# -- gradient estimation --------------------------------------------------------------------------


@torch.no_grad()
def sample_gradient_estimation(model, x, sigmas, extra_args=None, callback=None, disable=None, ge_gamma=2.0, cfg_pp=False):
    """Euler with the slope extrapolated by (ge_gamma - 1) times its change since the previous step;
    `cfg_pp` takes the slope from the unconditional prediction and lands on the guided one."""
    run, uncond = guided_run(model, x, extra_args, callback, cfg_pp)
    previous_slope = None
    for i, sigma, sigma_next in intervals(sigmas):
        denoised = run.denoise(x, sigma)
        direction = slope(x, sigma, uncond.get() if cfg_pp else denoised)
        run.report(i, x, sigma, denoised)
        if sigma_next == 0:
            x = denoised
        else:
            x = denoised + direction * sigma_next if cfg_pp else euler_move(x, direction, sigma, sigma_next)
            if previous_slope is not None:
                x = euler_move(x, (ge_gamma - 1) * (direction - previous_slope), sigma, sigma_next)
        previous_slope = direction
    return x


@torch.no_grad()
def sample_gradient_estimation_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, ge_gamma=2.0):
    return sample_gradient_estimation(model, x, sigmas, extra_args, callback, disable, ge_gamma=ge_gamma, cfg_pp=True)
