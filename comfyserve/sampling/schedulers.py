"""ComfyUI 0.8's schedulers (`scheduler` input of KSampler) and KSampler's sigma rules.

Every scheduler maps `(model_sampling, steps)` to a descending float32 sigma tensor that ends with
0; it has `steps + 1` entries except where ComfyUI's own formula yields another count
(`ddim_uniform` when 1000 // steps does not divide evenly, `beta` when two quantiles round to the
same timestep).  `sigmas_for` applies KSampler's denoise, start/end step and "discard the
penultimate sigma" rules on top.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = [
    "DISCARD_PENULTIMATE_SIGMA_SAMPLERS",
    "SCHEDULERS",
    "SCHEDULER_NAMES",
    "append_zero",
    "beta_scheduler",
    "calculate_sigmas",
    "ddim_uniform_scheduler",
    "exponential_scheduler",
    "get_sigmas_exponential",
    "get_sigmas_karras",
    "karras_scheduler",
    "kl_optimal_scheduler",
    "linear_quadratic_scheduler",
    "normal_scheduler",
    "sgm_uniform_scheduler",
    "sigmas_for",
    "simple_scheduler",
]


def append_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros([1])])


# -- k-diffusion's closed-form schedules (called with float sigma_min / sigma_max) ----------------


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device="cpu") -> torch.Tensor:
    """Karras et al. (2022): evenly spaced in sigma^(1/rho)."""
    ramp = torch.linspace(0, 1, n, device=device)
    lo = sigma_min ** (1 / rho)
    hi = sigma_max ** (1 / rho)
    return append_zero((hi + ramp * (lo - hi)) ** rho).to(device)


def get_sigmas_exponential(n: int, sigma_min: float, sigma_max: float, device="cpu") -> torch.Tensor:
    """Evenly spaced in log sigma."""
    return append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, device=device).exp())


def kl_optimal_scheduler(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """"Align your steps"-style KL-optimal schedule: evenly spaced in atan(sigma)."""
    frac = torch.arange(n, dtype=torch.float).div_(n - 1)
    sigmas = frac.new_zeros(n + 1)
    sigmas[:-1] = (frac * math.atan(sigma_min) + (1 - frac) * math.atan(sigma_max)).tan_()
    return sigmas


# -- schedules that read the model's sigma table -------------------------------------------------


def simple_scheduler(model_sampling, steps: int) -> torch.Tensor:
    """Every (1000/steps)-th table entry, counted from the top."""
    table = model_sampling.sigmas
    stride = len(table) / steps
    sigs = [float(table[-(1 + int(i * stride))]) for i in range(steps)]
    sigs.append(0.0)
    return torch.FloatTensor(sigs)


def ddim_uniform_scheduler(model_sampling, steps: int) -> torch.Tensor:
    """Table entries 1, 1 + 1000//steps, ... (DDIM's uniform timesteps), reversed, then 0."""
    table = model_sampling.sigmas
    idx = 1
    if math.isclose(float(table[idx]), 0, abs_tol=0.00001):
        steps += 1
        sigs: list[float] = []
    else:
        sigs = [0.0]
    stride = max(len(table) // steps, 1)
    while idx < len(table):
        sigs.append(float(table[idx]))
        idx += stride
    return torch.FloatTensor(sigs[::-1])


def normal_scheduler(model_sampling, steps: int, sgm: bool = False, floor: bool = False) -> torch.Tensor:
    """Timesteps evenly spaced between timestep(sigma_max) and timestep(sigma_min), mapped back
    through the (interpolating) `sigma(t)`; `sgm` spaces steps+1 points and drops the last."""
    ms = model_sampling
    start = ms.timestep(ms.sigma_max)
    end = ms.timestep(ms.sigma_min)
    append = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(ms.sigma(end)), 0, abs_tol=0.00001):
            steps += 1
            append = False
        timesteps = torch.linspace(start, end, steps)
    sigs = [float(ms.sigma(t)) for t in timesteps]
    if append:
        sigs.append(0.0)
    return torch.FloatTensor(sigs)


def sgm_uniform_scheduler(model_sampling, steps: int) -> torch.Tensor:
    return normal_scheduler(model_sampling, steps, sgm=True)


def beta_scheduler(model_sampling, steps: int, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    """Timesteps at the quantiles of a Beta(alpha, beta) distribution (arXiv:2407.12173);
    repeated timesteps are dropped."""
    import numpy
    import scipy.stats

    total = len(model_sampling.sigmas) - 1
    quantiles = 1 - numpy.linspace(0, 1, steps, endpoint=False)
    ts = numpy.rint(scipy.stats.beta.ppf(quantiles, alpha, beta) * total)
    sigs = []
    last = -1
    for t in ts:
        if t != last:
            sigs.append(float(model_sampling.sigmas[int(t)]))
        last = t
    sigs.append(0.0)
    return torch.FloatTensor(sigs)


def linear_quadratic_scheduler(model_sampling, steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None) -> torch.Tensor:
    """Mochi's schedule: linear in the first half (up to `threshold_noise`), quadratic after,
    as fractions of sigma_max."""
    if steps == 1:
        schedule = [1.0, 0.0]
    else:
        if linear_steps is None:
            linear_steps = steps // 2
        linear_part = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        step_diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        quad_coef = step_diff / (linear_steps * quadratic_steps**2)
        lin_coef = threshold_noise / linear_steps - 2 * step_diff / (quadratic_steps**2)
        const = quad_coef * (linear_steps**2)
        quadratic_part = [quad_coef * (i**2) + lin_coef * i + const for i in range(linear_steps, steps)]
        schedule = [1.0 - v for v in linear_part + quadratic_part + [1.0]]
    return torch.FloatTensor(schedule) * model_sampling.sigma_max.cpu()


def karras_scheduler(model_sampling, steps: int) -> torch.Tensor:
    return get_sigmas_karras(n=steps, sigma_min=float(model_sampling.sigma_min), sigma_max=float(model_sampling.sigma_max))


def exponential_scheduler(model_sampling, steps: int) -> torch.Tensor:
    return get_sigmas_exponential(n=steps, sigma_min=float(model_sampling.sigma_min), sigma_max=float(model_sampling.sigma_max))


def _kl_optimal(model_sampling, steps: int) -> torch.Tensor:
    return kl_optimal_scheduler(n=steps, sigma_min=float(model_sampling.sigma_min), sigma_max=float(model_sampling.sigma_max))


# ComfyUI 0.8's order (the KSampler `scheduler` list).
SCHEDULERS: dict[str, Callable[..., torch.Tensor]] = {
    "simple": simple_scheduler,
    "sgm_uniform": sgm_uniform_scheduler,
    "karras": karras_scheduler,
    "exponential": exponential_scheduler,
    "ddim_uniform": ddim_uniform_scheduler,
    "beta": beta_scheduler,
    "normal": normal_scheduler,
    "linear_quadratic": linear_quadratic_scheduler,
    "kl_optimal": _kl_optimal,
}
SCHEDULER_NAMES: list[str] = list(SCHEDULERS)

# KSampler computes one extra step for these and drops the second-to-last sigma.
DISCARD_PENULTIMATE_SIGMA_SAMPLERS = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})


def calculate_sigmas(model_sampling, scheduler_name: str, steps: int) -> torch.Tensor:
    """ComfyUI's `comfy.samplers.calculate_sigmas`."""
    try:
        fn = SCHEDULERS[scheduler_name]
    except KeyError:
        raise ValueError(f"error invalid scheduler {scheduler_name}") from None
    return fn(model_sampling, steps)


def _ksampler_sigmas(model_sampling, scheduler: str, steps: int, sampler_name: str | None) -> torch.Tensor:
    discard = sampler_name in DISCARD_PENULTIMATE_SIGMA_SAMPLERS
    sigmas = calculate_sigmas(model_sampling, scheduler, steps + 1 if discard else steps)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas


def sigmas_for(
    model_sampling,
    scheduler: str,
    steps: int,
    sampler_name: str | None = None,
    denoise: float | None = 1.0,
    start_step: int | None = None,
    last_step: int | None = None,
    force_full_denoise: bool = False,
) -> torch.Tensor:
    """The sigmas ComfyUI's `KSampler` samples with.

    - denoise < 1 (KSampler node): the schedule is computed for int(steps / denoise) steps and only
      its last steps + 1 sigmas are kept; denoise <= 0 gives no sigmas at all.
    - last_step / start_step (KSamplerAdvanced's end_at_step / start_at_step): the schedule is cut
      to sigmas[:last_step + 1] (its last sigma set to 0 when force_full_denoise, i.e.
      return_with_leftover_noise disabled), then to sigmas[start_step:].
    - dpm_2, dpm_2_ancestral, uni_pc, uni_pc_bh2 get a schedule for one more step with the
      second-to-last sigma removed.

    An empty result means "nothing to sample": ComfyUI then returns the input latent unchanged
    (also when start_step >= the number of steps).
    """
    if denoise is None or denoise > 0.9999:
        sigmas = _ksampler_sigmas(model_sampling, scheduler, steps, sampler_name)
    elif denoise <= 0.0:
        sigmas = torch.FloatTensor([])
    else:
        sigmas = _ksampler_sigmas(model_sampling, scheduler, int(steps / denoise), sampler_name)
        sigmas = sigmas[-(steps + 1) :]

    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[: last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is not None:
        if start_step < len(sigmas) - 1:
            sigmas = sigmas[start_step:]
        else:
            return torch.FloatTensor([])
    return sigmas
