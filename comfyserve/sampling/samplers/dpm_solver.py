"""DPM-Solver (Lu et al. 2022, arXiv:2206.00927): singlestep solvers of the noise prediction in
t = lambda = -log sigma.  `dpm_fast` spends the schedule's step count as model evaluations on
equal steps of orders 3, ..., 3, 2, 1; `dpm_adaptive` chooses its own steps from the difference of
an embedded order-2/3 pair, with a PID step-size controller."""

from __future__ import annotations

import math

import torch

from ._common import step_noise_sampler
from ._run import SamplerRun
from ._steps import ancestral_split, half_log_snr, sigma_at


class _StepSizeController:
    """PID control of the adaptive step: the step grows or shrinks by a smoothed power of the inverse
    errors of this and the last two accepted steps; a step whose factor falls below
    `accept_safety` is rejected and retried with the smaller size."""

    def __init__(self, h: float, pcoeff: float, icoeff: float, dcoeff: float, order: float, accept_safety: float = 0.81,
                 eps: float = 1e-8):
        self.h = h
        self.exponents = ((pcoeff + icoeff + dcoeff) / order, -(pcoeff + 2 * dcoeff) / order, dcoeff / order)
        self.accept_safety = accept_safety
        self.eps = eps
        self.inverse_errors: list[float] = []  # this step's, then the last two accepted steps'

    def propose(self, error) -> bool:
        """Scale h for the next attempt; True when this step is accepted."""
        inverse = 1 / (float(error) + self.eps)
        if not self.inverse_errors:
            self.inverse_errors = [inverse] * 3
        self.inverse_errors[0] = inverse
        current, last, before = self.inverse_errors
        b_current, b_last, b_before = self.exponents
        factor = 1 + math.atan(current**b_current * last**b_last * before**b_before - 1)
        accepted = factor >= self.accept_safety
        if accepted:
            self.inverse_errors = [current, current, last]
        self.h *= factor
        return accepted


def _eps_first_order(x, eps, sigma_to, rh):
    """DPM-Solver-1 (DDIM) from x over a log-SNR distance rh with a constant noise prediction."""
    return x - sigma_to * rh.expm1() * eps


class _SingleStep:
    """One DPM-Solver step from time t to t_to.  The noise predictions at its stage points are
    evaluated once and shared by updates of different orders (the adaptive solver compares two)."""

    def __init__(self, run: SamplerRun, x, t, t_to):
        self.run = run
        self.x = x
        self.t = t
        self.h = t_to - t
        self.sigma_to = sigma_at(t_to)
        self._eps: dict[float, torch.Tensor] = {}

    def eps(self, stage: float, x, t):
        """The noise prediction at the stage at fraction `stage` (computed from x at time t once)."""
        if stage not in self._eps:
            self._eps[stage] = (x - self.run.denoise(x, sigma_at(t))) / sigma_at(t)
        return self._eps[stage]

    def start_eps(self):
        return self.eps(0.0, self.x, self.t)

    def update(self, order: int, r1: float | None = None, r2: float = 2 / 3):
        """The order-1, -2 or -3 update (intermediate stages at fractions r1, r2 of the step;
        r1 defaults to 1/2 for order 2 and 1/3 for order 3)."""
        x, h, eps = self.x, self.h, self.start_eps()
        whole = _eps_first_order(x, eps, self.sigma_to, h)
        if order == 1:
            return whole
        if r1 is None:
            r1 = 1 / 2 if order == 2 else 1 / 3
        t_1 = self.t + r1 * h
        eps_1 = self.eps(r1, _eps_first_order(x, eps, sigma_at(t_1), r1 * h), t_1)
        if order == 2:
            return whole - self.sigma_to / (2 * r1) * h.expm1() * (eps_1 - eps)
        t_2 = self.t + r2 * h
        sigma_2 = sigma_at(t_2)
        x_2 = _eps_first_order(x, eps, sigma_2, r2 * h) - sigma_2 * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_1 - eps)
        eps_2 = self.eps(r2, x_2, t_2)
        return whole - self.sigma_to / r2 * (h.expm1() / h - 1) * (eps_2 - eps)


def _ancestral_target(t, t_to, t_end, eta):
    """Where an ancestral DPM-Solver step lands (never past t_end) and the std of the noise that
    completes it to t_to."""
    if not eta:
        return t_to, 0.0
    split = ancestral_split(sigma_at(t), sigma_at(t_to), eta)
    t_down = torch.minimum(t_end, half_log_snr(split.sigma_down))
    return t_down, (sigma_at(t_to) ** 2 - sigma_at(t_down) ** 2) ** 0.5


def _time_range(sigmas):
    """(t at the largest sigma, t at the smallest non-zero one) as new tensors; ComfyUI stops at the
    last sigma, or at the one before a final 0."""
    sigma_min = sigmas[-1] if sigmas[-1] != 0 else sigmas[-2]
    sigma_max = sigmas[0]
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("sigma_min and sigma_max must not be 0")
    return half_log_snr(sigma_max.detach().clone()), half_log_snr(sigma_min.detach().clone())


def _report(callback, x, i, t, t_up, denoised, **extra):
    if callback is not None:
        callback({"sigma": sigma_at(t), "sigma_hat": sigma_at(t_up), "x": x, "i": i, "t": t, "t_up": t_up, "denoised": denoised, **extra})


def _fast_orders(nfe: int) -> list[int]:
    """Orders of dpm_fast's equal steps: third order until the evaluation budget runs out."""
    steps = nfe // 3 + 1
    if nfe % 3 == 0:
        return [3] * (steps - 2) + [2, 1]
    return [3] * (steps - 1) + [nfe % 3]


@torch.no_grad()
def sample_dpm_fast(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=0.0, s_noise=1.0, noise_sampler=None):
    """KSampler's `dpm_fast`: len(sigmas) - 1 model evaluations spread over equal steps in t between
    the schedule's largest and smallest sigma (the schedule's own spacing is not used).  Every step
    draws step noise, used only when eta > 0."""
    if len(sigmas) <= 1:
        return x
    t_start, t_end = _time_range(sigmas)
    run = SamplerRun(model, x, extra_args)
    noise_sampler = step_noise_sampler(x, run.extra_args, noise_sampler)
    if not t_end > t_start and eta:
        raise ValueError("eta must be 0 for reverse sampling")
    orders = _fast_orders(len(sigmas) - 1)
    times = torch.linspace(t_start, t_end, len(orders) + 1, device=x.device)
    for i, order in enumerate(orders):
        t, t_next = times[i], times[i + 1]
        t_to, noise_std = _ancestral_target(t, t_next, t_end, eta)
        step = _SingleStep(run, x, t, t_to)
        _report(callback, x, i, t, t, x - sigma_at(t) * step.start_eps())
        x = step.update(order)
        x = x + noise_std * s_noise * noise_sampler(sigma_at(t), sigma_at(t_next))
    return x


@torch.no_grad()
def sample_dpm_adaptive(model, x, sigmas, extra_args=None, callback=None, disable=None, order=3, rtol=0.05, atol=0.0078,
                        h_init=0.05, pcoeff=0.0, icoeff=1.0, dcoeff=0.0, accept_safety=0.81, eta=0.0, s_noise=1.0,
                        noise_sampler=None, return_info=False):
    """KSampler's `dpm_adaptive`: DPM-Solver-12 or -23 over the schedule's sigma range with its own
    steps - the error is the scaled RMS difference of the embedded lower- and higher-order updates
    (tolerances rtol, atol), the step size is PID-controlled.  The schedule's step count is ignored."""
    if len(sigmas) <= 1:
        return x
    t_start, t_end = _time_range(sigmas)
    run = SamplerRun(model, x, extra_args)
    noise_sampler = step_noise_sampler(x, run.extra_args, noise_sampler)
    if order not in {2, 3}:
        raise ValueError("order should be 2 or 3")
    forward = t_end > t_start
    if not forward and eta:
        raise ValueError("eta must be 0 for reverse sampling")
    atol, rtol = torch.tensor(atol), torch.tensor(rtol)
    controller = _StepSizeController(abs(h_init) * (1 if forward else -1), pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    info = {"steps": 0, "nfe": 0, "n_accept": 0, "n_reject": 0}
    t, x_low_accepted = t_start, x
    while t < t_end - 1e-5 if forward else t > t_end + 1e-5:
        t_next = torch.minimum(t_end, t + controller.h) if forward else torch.maximum(t_end, t + controller.h)
        t_to, noise_std = _ancestral_target(t, t_next, t_end, eta)
        step = _SingleStep(run, x, t, t_to)
        denoised = x - sigma_at(t) * step.start_eps()
        if order == 2:
            x_low, x_high = step.update(1), step.update(2)
        else:
            x_low, x_high = step.update(2, r1=1 / 3), step.update(3)
        scale = torch.maximum(atol, rtol * torch.maximum(x_low.abs(), x_low_accepted.abs()))
        error = torch.linalg.norm((x_low - x_high) / scale) / x.numel() ** 0.5
        if controller.propose(error):
            x_low_accepted = x_low
            x = x_high + noise_std * s_noise * noise_sampler(sigma_at(t), sigma_at(t_next))
            t = t_next
            info["n_accept"] += 1
        else:
            info["n_reject"] += 1
        info["nfe"] += order
        info["steps"] += 1
        _report(callback, x, info["steps"] - 1, t, t, denoised, error=error, h=controller.h, **info)
    return (x, info) if return_info else x
