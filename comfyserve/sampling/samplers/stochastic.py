"""Stochastic samplers: DDPM ancestral sampling, LCM, ER-SDE (arXiv:2309.06169), SEEDS-2/3
(arXiv:2305.14267) with its deterministic exponential-Heun special cases, and SA-Solver
(arXiv:2309.05019)."""

from __future__ import annotations

import math

import torch

from ._common import model_sampling_of, noise_scale_of, step_noise_sampler
from ._run import SamplerRun, intervals
from ._steps import LogSNRStep, exponential_update, half_log_snr, sigma_at, slope

# -- DDPM / LCM -----------------------------------------------------------------------------------


def _ddpm_step(x_vp, eps, sigma, sigma_next, noise_sampler):
    """Ho et al.'s ancestral step in VP space, from alpha_bar(sigma) to alpha_bar(sigma_next):
    the posterior mean from the noise prediction, plus posterior-std noise unless sigma_next is 0."""
    alpha_bar = 1 / ((sigma * sigma) + 1)
    alpha_bar_next = 1 / ((sigma_next * sigma_next) + 1)
    alpha_step = alpha_bar / alpha_bar_next
    mean = (1.0 / alpha_step).sqrt() * (x_vp - (1 - alpha_step) * eps / (1 - alpha_bar).sqrt())
    if sigma_next > 0:
        posterior_std = ((1 - alpha_step) * (1.0 - alpha_bar_next) / (1.0 - alpha_bar)).sqrt()
        mean += posterior_std * noise_sampler(sigma, sigma_next)
    return mean


@torch.no_grad()
def sample_ddpm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """DDPM ancestral sampling (Ho et al. 2020) on the given sigmas, stepping in VP space."""
    run = SamplerRun(model, x, extra_args, callback)
    noise_sampler = step_noise_sampler(x, run.extra_args, noise_sampler)
    for i, sigma, sigma_next in intervals(sigmas):
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, denoised)
        x = _ddpm_step(x / torch.sqrt(1.0 + sigma**2.0), slope(x, sigma, denoised), sigma, sigma_next, noise_sampler)
        if sigma_next != 0:
            x *= torch.sqrt(1.0 + sigma_next**2.0)
    return x


@torch.no_grad()
def sample_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """Latent consistency sampling: jump to the prediction, then re-noise it to the next sigma
    with the model's own noise scaling."""
    run = SamplerRun(model, x, extra_args, callback)
    noise_sampler = step_noise_sampler(x, run.extra_args, noise_sampler)
    model_sampling = model_sampling_of(model)
    for i, sigma, sigma_next in intervals(sigmas):
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, denoised)
        x = denoised
        if sigma_next > 0:
            x = model_sampling.noise_scaling(sigma_next, noise_sampler(sigma, sigma_next), x)
    return x


# -- ER-SDE ---------------------------------------------------------------------------------------


def er_sde_noise_scaler(nsr):
    """ER-SDE-Solver-3's default noise-scale function of the noise-to-signal ratio: nsr (e^(nsr^0.3) + 10)."""
    return nsr * ((nsr**0.3).exp() + 10.0)


_ER_SDE_POINTS = 200.0  # quadrature points for the stage-2 / stage-3 integrals


@torch.no_grad()
def sample_er_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1.0, noise_sampler=None, noise_scaler=None, max_stage=3):
    """Extended reverse-time SDE solver (VP ER-SDE-Solver-3): a first-order step in the
    noise-to-signal ratio, then Taylor terms from the first and second divided differences of the
    predictions (from the second and third step on), their integrals taken numerically."""
    run = SamplerRun(model, x, extra_args, callback)
    noise_sampler = step_noise_sampler(x, run.extra_args, noise_sampler)
    s_noise = s_noise * noise_scale_of(model_sampling_of(model))
    scaler = er_sde_noise_scaler if noise_scaler is None else noise_scaler
    grid = torch.arange(0, _ER_SDE_POINTS, dtype=torch.float32, device=x.device)
    nsr = sigma_at(half_log_snr(sigmas))  # sigma / alpha at every schedule point
    previous = None  # the previous step's prediction
    previous_difference = None  # and its first divided difference
    for i, sigma, sigma_next in intervals(sigmas):
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, denoised)
        stages = min(max_stage, i + 1)
        if sigma_next == 0:
            x = denoised
            previous = denoised
            continue
        nsr_s, nsr_t = nsr[i], nsr[i + 1]
        alpha_t = sigma_next / nsr_t
        scale_ratio = scaler(nsr_t) / scaler(nsr_s)
        x = alpha_t / (sigma / nsr_s) * scale_ratio * x + alpha_t * (1 - scale_ratio) * denoised
        if stages >= 2:
            d_nsr = nsr_t - nsr_s
            spacing = -d_nsr / _ER_SDE_POINTS
            nodes = nsr_t + grid * spacing
            scaled_nodes = scaler(nodes)
            integral_1 = torch.sum(1 / scaled_nodes) * spacing
            difference = (denoised - previous) / (nsr_s - nsr[i - 1])
            x = x + alpha_t * (d_nsr + integral_1 * scaler(nsr_t)) * difference
            if stages >= 3:
                integral_2 = torch.sum((nodes - nsr_s) / scaled_nodes) * spacing
                second_difference = (difference - previous_difference) / ((nsr_s - nsr[i - 2]) / 2)
                x = x + alpha_t * ((d_nsr**2) / 2 + integral_2 * scaler(nsr_t)) * second_difference
            previous_difference = difference
        if s_noise > 0:
            noise_std = (nsr_t**2 - nsr_s**2 * scale_ratio**2).sqrt().nan_to_num(nan=0.0)
            x = x + alpha_t * noise_sampler(sigma, sigma_next) * s_noise * noise_std
        previous = denoised
    return x


# -- SEEDS ----------------------------------------------------------------------------------------


class _StageNoise:
    """The SDE noise of one step's stages: the first stage draws it fresh, each later stage keeps the
    previous stage's noise decayed by e^((r_prev - r) h eta) and tops the variance up with a fresh
    draw, so that the stages see one Brownian path."""

    def __init__(self, step: LogSNRStep, noise_sampler, s_noise, enabled: bool):
        self.step = step
        self.noise_sampler = noise_sampler
        self.s_noise = s_noise
        self.enabled = enabled
        self.noise = None
        self.r = 0.0
        self.sigma = step.sigma

    def add(self, x, r: float, sigma_r):
        """x at the stage at fraction r (sigma sigma_r) with its share of the noise added."""
        if not self.enabled:
            return x
        fresh = self.noise_sampler(self.sigma, sigma_r)
        if self.noise is None:
            self.noise = self.step.relative_noise_std(r) * fresh
        else:
            log_decay = (self.r - r) * self.step.h * self.step.eta
            self.noise = self.noise * log_decay.exp() + log_decay.mul(2).expm1().neg().sqrt() * fresh
        self.r, self.sigma = r, sigma_r
        return x + self.noise * sigma_r * self.s_noise


def _seeds_2(model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, r, solver_type):
    if solver_type not in {"phi_1", "phi_2"}:
        raise ValueError("solver_type must be 'phi_1' or 'phi_2'")
    run = SamplerRun(model, x, extra_args, callback)
    noise_sampler = step_noise_sampler(x, run.extra_args, noise_sampler)
    s_noise = s_noise * noise_scale_of(model_sampling_of(model))
    for i, sigma, sigma_next in intervals(sigmas):
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        step = LogSNRStep(sigma, sigma_next, eta)
        noise = _StageNoise(step, noise_sampler, s_noise, eta > 0 and s_noise > 0)
        sigma_mid, alpha_mid = step.point(r)
        x_mid = exponential_update(x, denoised, step.x_decay(sigma_mid, r), alpha_mid * step.phi_1(r))
        denoised_mid = run.denoise(noise.add(x_mid, r, sigma_mid), sigma_mid)
        if solver_type == "phi_1":
            x = step.first_order(x, torch.lerp(denoised, denoised_mid, 1 / (2 * r)))
        else:
            w_mid = step.phi_2() / r
            w_start = step.phi_1() - w_mid
            x = exponential_update(x, w_start * denoised + w_mid * denoised_mid, step.x_decay(sigma_next), step.alpha_next)
        x = noise.add(x, 1, sigma_next)
    return x


@torch.no_grad()
def sample_seeds_2(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None, r=0.5, solver_type="phi_1"):
    """SEEDS-2: a two-stage stochastic exponential solver in data prediction, the stage at fraction r;
    "phi_1" blends the two predictions 1 - 1/(2r) : 1/(2r), "phi_2" weights them with phi_2."""
    return _seeds_2(model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, r, solver_type)


@torch.no_grad()
def sample_exp_heun_2_x0(model, x, sigmas, extra_args=None, callback=None, disable=None, solver_type="phi_2"):
    """Exponential Heun (second order, data prediction, log-SNR time): SEEDS-2 without noise, r = 1."""
    return _seeds_2(model, x, sigmas, extra_args, callback, 0.0, 0.0, None, 1.0, solver_type)


@torch.no_grad()
def sample_exp_heun_2_x0_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None, solver_type="phi_2"):
    """Stochastic exponential Heun: SEEDS-2 with r = 1."""
    return _seeds_2(model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, 1.0, solver_type)


@torch.no_grad()
def sample_seeds_3(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None, r_1=1.0 / 3, r_2=2.0 / 3):
    """SEEDS-3: a three-stage stochastic exponential solver in data prediction (stages at r_1, r_2)."""
    run = SamplerRun(model, x, extra_args, callback)
    noise_sampler = step_noise_sampler(x, run.extra_args, noise_sampler)
    s_noise = s_noise * noise_scale_of(model_sampling_of(model))
    for i, sigma, sigma_next in intervals(sigmas):
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        step = LogSNRStep(sigma, sigma_next, eta)
        noise = _StageNoise(step, noise_sampler, s_noise, eta > 0 and s_noise > 0)
        sigma_1, alpha_1 = step.point(r_1)
        sigma_2, alpha_2 = step.point(r_2)

        x_1 = exponential_update(x, denoised, step.x_decay(sigma_1, r_1), alpha_1 * step.phi_1(r_1))
        denoised_1 = run.denoise(noise.add(x_1, r_1, sigma_1), sigma_1)

        w_1 = r_2 / r_1 * step.phi_2(r_2)
        w_0 = step.phi_1(r_2) - w_1
        x_2 = exponential_update(x, w_0 * denoised + w_1 * denoised_1, step.x_decay(sigma_2, r_2), alpha_2)
        denoised_2 = run.denoise(noise.add(x_2, r_2, sigma_2), sigma_2)

        w_2 = step.phi_2() / r_2
        w_0 = step.phi_1() - w_2
        x = exponential_update(x, w_0 * denoised + w_2 * denoised_2, step.x_decay(sigma_next), step.alpha_next)
        x = noise.add(x, 1, sigma_next)
    return x


# -- SA-Solver ------------------------------------------------------------------------------------


def _exponential_moments(s: torch.Tensor, t: torch.Tensor, count: int, tau: float) -> torch.Tensor:
    """M_p = (1 + tau^2) * integral_s^t e^((1 + tau^2)(u - t)) u^p du for p < count.

    Integrating by parts, M_p = t^p - s^p e^(-(1 + tau^2)(t - s)) - p / (1 + tau^2) M_(p-1); unrolled,
    M = L @ boundary with L[p, q] = (-1)^(p-q) p! / (q! (1 + tau^2)^(p-q)) below the diagonal."""
    rate = 1 + tau**2
    powers = torch.arange(count, dtype=s.dtype, device=s.device)
    boundary = t**powers - s**powers * (-rate * (t - s)).exp()
    lag = powers.unsqueeze(1) - powers.unsqueeze(0)
    log_factorials = (powers + 1).lgamma()
    log_weights = log_factorials.unsqueeze(1) - log_factorials.unsqueeze(0)
    if tau > 0:
        log_weights = log_weights - lag * math.log(rate)
    alternating = torch.where(lag % 2 == 0, 1.0, -1.0)
    return (log_weights.exp() * alternating).tril() @ boundary


def _simple_order2_coeffs(sigma_next, nodes, lam_s, lam_t, tau: float, is_corrector_step: bool):
    """The paper's cheaper two-point weights (its Appendix D), [older, newer]."""
    rate = 1 + tau**2
    h = lam_t - lam_s
    alpha_t = sigma_next * lam_t.exp()
    total = alpha_t * (-h * rate).expm1().neg()
    if is_corrector_step:
        newer = alpha_t * (0.5 * rate * h)
        return torch.stack([total - newer, newer])
    older = alpha_t * (0.5 * rate * h**2) / (nodes[-2] - lam_s)
    return torch.stack([older, total - older])


def stochastic_adams_coeffs(sigma_next, nodes, lam_s, lam_t, tau: float, simple_order_2: bool = False,
                            is_corrector_step: bool = False) -> torch.Tensor:
    """SA-Solver's weights of the predictions at the log-SNR `nodes` for a step lam_s -> lam_t
    (the paper's eqs. 15 and 18): each is alpha_t times the exponential moment integral of that
    node's Lagrange polynomial, found by solving the transposed Vandermonde system."""
    count = nodes.shape[0]
    if simple_order_2 and count == 2:
        return _simple_order2_coeffs(sigma_next, nodes, lam_s, lam_t, tau, is_corrector_step)
    moments = _exponential_moments(lam_s, lam_t, count, tau)
    lagrange_integrals = torch.linalg.solve(torch.vander(nodes, count, increasing=True).T, moments)
    return sigma_next * lam_t.exp() * lagrange_integrals


def tau_interval(start_sigma: float, end_sigma: float, eta: float = 1.0):
    """The SDE strength tau(sigma): `eta` for sigmas in [end_sigma, start_sigma], 0 (an ODE) elsewhere."""

    def tau(sigma) -> float:
        if eta <= 0:
            return 0.0
        value = sigma.item() if isinstance(sigma, torch.Tensor) else sigma
        return eta if start_sigma >= value >= end_sigma else 0.0

    return tau


def _adams_update(x, predictions, nodes, sigma_from, sigma_to, lam_from, lam_to, tau, simple_order_2, is_corrector_step):
    """x moved from lam_from to lam_to with the weighted predictions (no noise)."""
    weights = stochastic_adams_coeffs(sigma_to, nodes, lam_from, lam_to, tau, simple_order_2, is_corrector_step)
    combined = torch.tensordot(torch.stack(predictions, dim=1), weights, dims=([1], [0]))
    return sigma_to / sigma_from * (-(tau**2) * (lam_to - lam_from)).exp() * x + combined


@torch.no_grad()
def sample_sa_solver(model, x, sigmas, extra_args=None, callback=None, disable=False, tau_func=None, s_noise=1.0, noise_sampler=None,
                     predictor_order=3, corrector_order=4, use_pece=False, simple_order_2=False):
    """Stochastic Adams predictor-corrector.  Each step corrects the previous prediction with the
    new evaluation (not after the first step), then predicts the next point; near the end the
    orders drop so no node lies past the last sigma.  By default noise is added only between 20 %
    and 80 % of the sampling."""
    if len(sigmas) <= 1:
        return x
    run = SamplerRun(model, x, extra_args, callback)
    noise_sampler = step_noise_sampler(x, run.extra_args, noise_sampler)
    model_sampling = model_sampling_of(model)
    s_noise = s_noise * noise_scale_of(model_sampling)
    lambdas = half_log_snr(sigmas)
    if tau_func is None:
        tau_func = tau_interval(model_sampling.percent_to_sigma(0.2), model_sampling.percent_to_sigma(0.8), eta=1.0)
    memory = max(predictor_order, corrector_order)
    last = len(sigmas) - 1
    shorten_at_end = sigmas[-1].item() == 0
    predictions: list[torch.Tensor] = []
    predicted = x
    tau = 0.0  # SDE strength and noise of the last prediction, reused by its correction
    noise = 0.0
    for i, sigma, sigma_next in intervals(sigmas):
        denoised = run.denoise(predicted, sigma)
        run.report(i, predicted, sigma, denoised)
        predictions = (predictions + [denoised])[-memory:]
        n_predictor = min(predictor_order, len(predictions))
        n_corrector = 0 if i == 0 or (sigma_next == 0 and not use_pece) else min(corrector_order, len(predictions))
        if shorten_at_end:
            n_predictor = min(n_predictor, last - 1 - i)
            n_corrector = min(n_corrector, last - i)

        if n_corrector == 0:
            x = predicted
        else:
            x = _adams_update(x, predictions[-n_corrector:], lambdas[i - n_corrector + 1 : i + 1], sigmas[i - 1], sigma,
                              lambdas[i - 1], lambdas[i], tau, simple_order_2, is_corrector_step=True)
            if tau > 0 and s_noise > 0:
                x = x + noise
            if use_pece:
                denoised = run.denoise(x, sigma)
                predictions[-1] = denoised

        if sigma_next == 0:
            predicted = denoised
            continue
        tau = tau_func(sigma_next)
        predicted = _adams_update(x, predictions[-n_predictor:], lambdas[i - n_predictor + 1 : i + 1], sigma, sigma_next,
                                  lambdas[i], lambdas[i + 1], tau, simple_order_2, is_corrector_step=False)
        if tau > 0 and s_noise > 0:
            h = lambdas[i + 1] - lambdas[i]
            noise = noise_sampler(sigma, sigma_next) * sigma_next * (-2 * tau**2 * h).expm1().neg().sqrt() * s_noise
            predicted = predicted + noise
    return predicted


@torch.no_grad()
def sample_sa_solver_pece(model, x, sigmas, extra_args=None, callback=None, disable=False, tau_func=None, s_noise=1.0, noise_sampler=None,
                          predictor_order=3, corrector_order=4, simple_order_2=False):
    """SA-Solver in PECE mode: the corrected point is evaluated again and that prediction replaces
    the newest one."""
    return sample_sa_solver(model, x, sigmas, extra_args, callback, disable, tau_func, s_noise, noise_sampler, predictor_order,
                            corrector_order, use_pece=True, simple_order_2=simple_order_2)
