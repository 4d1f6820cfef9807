"""ComfyUI 0.8's schedulers (KSampler's `scheduler` input) and KSampler's rules for cutting them.

A scheduler maps `(model_sampling, steps)` to a descending float32 CPU tensor of sigmas ending in 0,
`steps + 1` long except where ComfyUI's own construction gives another length (`ddim_uniform` when
1000 // steps leaves a remainder, `beta` when two quantiles round to the same timestep).
`sigmas_for` applies KSampler's denoise, start/end step and "one step more, second-to-last sigma
dropped" rules on top.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = [
    "DISCARD_PENULTIMATE_SIGMA_SAMPLERS",
    "SCHEDULERS",
    "SCHEDULER_NAMES",
    "beta_scheduler",
    "calculate_sigmas",
    "ddim_uniform_scheduler",
    "exponential_scheduler",
    "exponential_sigmas",
    "karras_scheduler",
    "karras_sigmas",
    "kl_optimal_scheduler",
    "kl_optimal_sigmas",
    "linear_quadratic_scheduler",
    "normal_scheduler",
    "sgm_uniform_scheduler",
    "sigmas_for",
    "simple_scheduler",
]


def _then_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def _float32(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# -- closed forms between two sigmas --------------------------------------------------------------


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022, eq. 5): n sigmas evenly spaced in sigma^(1/rho) from sigma_max down to
    sigma_min, then 0."""
    root_max, root_min = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    fractions = torch.linspace(0, 1, n)
    return _then_zero((root_max + fractions * (root_min - root_max)) ** rho)


def exponential_sigmas(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """n sigmas evenly spaced in log sigma, then 0."""
    return _then_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def kl_optimal_sigmas(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """The "KL-optimal" schedule (Align Your Steps): n sigmas evenly spaced in arctan(sigma), then 0."""
    toward_min = torch.arange(n, dtype=torch.float32) / (n - 1)
    return _then_zero((toward_min * math.atan(sigma_min) + (1 - toward_min) * math.atan(sigma_max)).tan())


def _range_of(model_sampling) -> tuple[float, float]:
    return float(model_sampling.sigma_min), float(model_sampling.sigma_max)


def karras_scheduler(model_sampling, steps: int) -> torch.Tensor:
    return karras_sigmas(steps, *_range_of(model_sampling))


def exponential_scheduler(model_sampling, steps: int) -> torch.Tensor:
    return exponential_sigmas(steps, *_range_of(model_sampling))


def kl_optimal_scheduler(model_sampling, steps: int) -> torch.Tensor:
    return kl_optimal_sigmas(steps, *_range_of(model_sampling))


# -- schedules picked from the model's sigma table ------------------------------------------------


def simple_scheduler(model_sampling, steps: int) -> torch.Tensor:
    """Table entries at equal (fractional, truncated) strides of len(table) / steps from the top."""
    table = model_sampling.sigmas
    stride = len(table) / steps
    return _float32([float(table[len(table) - 1 - int(i * stride)]) for i in range(steps)] + [0.0])


def ddim_uniform_scheduler(model_sampling, steps: int) -> torch.Tensor:
    """DDIM's uniform timesteps: table entries 1, 1 + k, 1 + 2k, ... with k = len(table) // steps,
    highest first, then 0 (a table whose entry 1 is already ~0 gets one step more and no 0)."""
    table = model_sampling.sigmas
    table_reaches_zero = math.isclose(float(table[1]), 0, abs_tol=0.00001)
    if table_reaches_zero:
        steps += 1
    picked = [float(table[k]) for k in range(1, len(table), max(len(table) // steps, 1))]
    return _float32(picked[::-1] + ([] if table_reaches_zero else [0.0]))


def normal_scheduler(model_sampling, steps: int, sgm: bool = False) -> torch.Tensor:
    """Timesteps evenly spaced from the table's top to its bottom, read back through the
    interpolating sigma(t), then 0; `sgm` spaces steps + 1 points and drops the bottom one (when
    the bottom sigma is ~0 the plain form spaces one point more instead of appending the 0)."""
    ms = model_sampling
    t_top, t_bottom = ms.timestep(ms.sigma_max), ms.timestep(ms.sigma_min)
    final_zero = [0.0]
    if sgm:
        timesteps = torch.linspace(t_top, t_bottom, steps + 1)[:-1]
    else:
        if math.isclose(float(ms.sigma(t_bottom)), 0, abs_tol=0.00001):
            steps += 1
            final_zero = []
        timesteps = torch.linspace(t_top, t_bottom, steps)
    return _float32([float(ms.sigma(t)) for t in timesteps] + final_zero)


def sgm_uniform_scheduler(model_sampling, steps: int) -> torch.Tensor:
    return normal_scheduler(model_sampling, steps, sgm=True)


def beta_scheduler(model_sampling, steps: int, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    """Timesteps at the quantiles 1, 1 - 1/steps, ... of a Beta(alpha, beta) distribution
    (arXiv:2407.12173), rounded to table entries; a timestep equal to the one before is skipped."""
    import numpy
    import scipy.stats

    last_index = len(model_sampling.sigmas) - 1
    quantiles = 1 - numpy.linspace(0, 1, steps, endpoint=False)
    timesteps = numpy.rint(scipy.stats.beta.ppf(quantiles, alpha, beta) * last_index)
    kept = [t for k, t in enumerate(timesteps) if k == 0 or t != timesteps[k - 1]]
    return _float32([float(model_sampling.sigmas[int(t)]) for t in kept] + [0.0])


def linear_quadratic_scheduler(model_sampling, steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None) -> torch.Tensor:
    """Mochi's schedule as fractions of sigma_max: the denoising progress rises linearly to
    `threshold_noise` over the first `linear_steps` (default half) steps, then along the quadratic
    that continues it with the same slope and reaches 1 at the last step."""
    if steps == 1:
        levels = [1.0, 0.0]
    else:
        n_linear = steps // 2 if linear_steps is None else linear_steps
        n_quadratic = steps - n_linear
        shortfall = n_linear - threshold_noise * steps
        a = shortfall / (n_linear * n_quadratic**2)
        b = threshold_noise / n_linear - 2 * shortfall / (n_quadratic**2)
        c = a * (n_linear**2)
        progress = [i * threshold_noise / n_linear for i in range(n_linear)]
        progress += [a * (i**2) + b * i + c for i in range(n_linear, steps)]
        levels = [1.0 - p for p in progress + [1.0]]
    return _float32(levels) * model_sampling.sigma_max.cpu()


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
    "kl_optimal": kl_optimal_scheduler,
}
SCHEDULER_NAMES: list[str] = list(SCHEDULERS)

# KSampler computes one extra step for these and drops the second-to-last sigma.
DISCARD_PENULTIMATE_SIGMA_SAMPLERS = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})


def calculate_sigmas(model_sampling, scheduler_name: str, steps: int) -> torch.Tensor:
    """The named scheduler's sigmas for `steps` steps."""
    scheduler = SCHEDULERS.get(scheduler_name)
    if scheduler is None:
        raise ValueError(f"error invalid scheduler {scheduler_name}")
    return scheduler(model_sampling, steps)


def _sampler_schedule(model_sampling, scheduler: str, steps: int, sampler_name: str | None) -> torch.Tensor:
    if sampler_name not in DISCARD_PENULTIMATE_SIGMA_SAMPLERS:
        return calculate_sigmas(model_sampling, scheduler, steps)
    longer = calculate_sigmas(model_sampling, scheduler, steps + 1)
    return torch.cat([longer[:-2], longer[-1:]])


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
    nothing = torch.FloatTensor([])
    if denoise is None or denoise > 0.9999:
        sigmas = _sampler_schedule(model_sampling, scheduler, steps, sampler_name)
    elif denoise <= 0.0:
        return nothing
    else:
        sigmas = _sampler_schedule(model_sampling, scheduler, int(steps / denoise), sampler_name)[-(steps + 1) :]

    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[: last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is None:
        return sigmas
    return sigmas[start_step:] if start_step < len(sigmas) - 1 else nothing
