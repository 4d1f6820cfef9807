"""ComfyUI 0.8's samplers, one function per KSampler `sampler_name`, with k-diffusion's signature:

    sample_<name>(model, x, sigmas, extra_args=None, callback=None, disable=None, **options) -> x

- `model(x, sigma_batch, **extra_args) -> denoised` is the guided denoiser (ComfyUI's
  KSamplerX0Inpaint around CFGGuider).  It should expose `model.model_sampling` (lcm re-noises with
  its `noise_scaling`, sa_solver reads `percent_to_sigma`); SD1's EPS table is used when absent.
- `x` is the already noise-scaled start (`ksampler_sample` does that), `sigmas` a descending 1-D
  tensor on x's device.
- `extra_args` is passed to every model call; ComfyUI puts `model_options`, `seed` and
  `denoise_mask` there.  Stochastic samplers seed their step noise from `extra_args["seed"]`.
- `callback(info)` once per step with {"x", "i", "sigma", "sigma_hat", "denoised"} (uni_pc:
  {"x", "i", "denoised"}; dpm_fast / dpm_adaptive add "t", "t_up").
- `disable` (progress bar) is accepted and ignored.
- The *_cfg_pp samplers need the unconditional prediction: they append a hook to
  `extra_args["model_options"]["sampler_post_cfg_function"]` and set
  `"disable_cfg1_optimization"`; the guidance layer must call those hooks (ComfyUI's contract,
  see `_common.run_post_cfg_functions`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ._common import run_post_cfg_functions, set_post_cfg_function
from .cfg_pp import (
    sample_dpmpp_2m_cfg_pp,
    sample_dpmpp_2s_ancestral_cfg_pp,
    sample_euler_ancestral_cfg_pp,
    sample_euler_cfg_pp,
)
from .classic import (
    sample_dpm_2,
    sample_dpm_2_ancestral,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    sample_heunpp2,
    sample_lms,
)
from .dpm_solver import sample_dpm_adaptive, sample_dpm_fast
from .dpmpp import (
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_2m_sde_gpu,
    sample_dpmpp_2m_sde_heun,
    sample_dpmpp_2m_sde_heun_gpu,
    sample_dpmpp_2s_ancestral,
    sample_dpmpp_3m_sde,
    sample_dpmpp_3m_sde_gpu,
    sample_dpmpp_sde,
    sample_dpmpp_sde_gpu,
)
from .multistep import (
    sample_deis,
    sample_gradient_estimation,
    sample_gradient_estimation_cfg_pp,
    sample_ipndm,
    sample_ipndm_v,
    sample_res_multistep,
    sample_res_multistep_ancestral,
    sample_res_multistep_ancestral_cfg_pp,
    sample_res_multistep_cfg_pp,
)
from .stochastic import (
    sample_ddpm,
    sample_er_sde,
    sample_exp_heun_2_x0,
    sample_exp_heun_2_x0_sde,
    sample_lcm,
    sample_sa_solver,
    sample_sa_solver_pece,
    sample_seeds_2,
    sample_seeds_3,
)
from .uni_pc import sample_uni_pc, sample_uni_pc_bh2

__all__ = [
    "INPAINT_RANDOM_NOISE_SAMPLERS",
    "KSAMPLER_NAMES",
    "SAMPLERS",
    "SAMPLER_NAMES",
    "get_sampler",
    "ksampler_sample",
    "max_denoise",
    "run_post_cfg_functions",
    "set_post_cfg_function",
]

# ComfyUI 0.8's `comfy.samplers.KSAMPLER_NAMES` (k-diffusion samplers), in its order.
KSAMPLER_NAMES: list[str] = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "exp_heun_2_x0",
    "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm",
    "lcm", "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece",
]  # fmt: skip
# The KSampler `sampler_name` list.
SAMPLER_NAMES: list[str] = KSAMPLER_NAMES + ["ddim", "uni_pc", "uni_pc_bh2"]

SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "euler": sample_euler,
    "euler_cfg_pp": sample_euler_cfg_pp,
    "euler_ancestral": sample_euler_ancestral,
    "euler_ancestral_cfg_pp": sample_euler_ancestral_cfg_pp,
    "heun": sample_heun,
    "heunpp2": sample_heunpp2,
    "exp_heun_2_x0": sample_exp_heun_2_x0,
    "exp_heun_2_x0_sde": sample_exp_heun_2_x0_sde,
    "dpm_2": sample_dpm_2,
    "dpm_2_ancestral": sample_dpm_2_ancestral,
    "lms": sample_lms,
    "dpm_fast": sample_dpm_fast,
    "dpm_adaptive": sample_dpm_adaptive,
    "dpmpp_2s_ancestral": sample_dpmpp_2s_ancestral,
    "dpmpp_2s_ancestral_cfg_pp": sample_dpmpp_2s_ancestral_cfg_pp,
    "dpmpp_sde": sample_dpmpp_sde,
    "dpmpp_sde_gpu": sample_dpmpp_sde_gpu,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_cfg_pp": sample_dpmpp_2m_cfg_pp,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_2m_sde_gpu": sample_dpmpp_2m_sde_gpu,
    "dpmpp_2m_sde_heun": sample_dpmpp_2m_sde_heun,
    "dpmpp_2m_sde_heun_gpu": sample_dpmpp_2m_sde_heun_gpu,
    "dpmpp_3m_sde": sample_dpmpp_3m_sde,
    "dpmpp_3m_sde_gpu": sample_dpmpp_3m_sde_gpu,
    "ddpm": sample_ddpm,
    "lcm": sample_lcm,
    "ipndm": sample_ipndm,
    "ipndm_v": sample_ipndm_v,
    "deis": sample_deis,
    "res_multistep": sample_res_multistep,
    "res_multistep_cfg_pp": sample_res_multistep_cfg_pp,
    "res_multistep_ancestral": sample_res_multistep_ancestral,
    "res_multistep_ancestral_cfg_pp": sample_res_multistep_ancestral_cfg_pp,
    "gradient_estimation": sample_gradient_estimation,
    "gradient_estimation_cfg_pp": sample_gradient_estimation_cfg_pp,
    "er_sde": sample_er_sde,
    "seeds_2": sample_seeds_2,
    "seeds_3": sample_seeds_3,
    "sa_solver": sample_sa_solver,
    "sa_solver_pece": sample_sa_solver_pece,
    # ComfyUI's ddim *is* euler (plus the inpaint noise option below).
    "ddim": sample_euler,
    "uni_pc": sample_uni_pc,
    "uni_pc_bh2": sample_uni_pc_bh2,
}

# Samplers whose masked-latent re-noising uses fresh noise (seed + 1, see
# `noise.inpaint_random_noise`) instead of the initial noise: ComfyUI's inpaint option "random".
INPAINT_RANDOM_NOISE_SAMPLERS = frozenset({"ddim"})


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}") from None


def max_denoise(model_sampling, sigmas: torch.Tensor) -> bool:
    """Whether the schedule starts at the model's largest sigma (to a relative 1e-5) or above it:
    then ComfyUI scales the start noise by sqrt(1 + sigma^2) instead of sigma."""
    start, largest = float(sigmas[0]), float(model_sampling.sigma_max)
    return start > largest or math.isclose(largest, start, rel_tol=1e-05)


def ksampler_sample(
    sampler_name: str,
    model,
    noise: torch.Tensor,
    latent_image: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback: Callable[[dict], None] | None = None,
    disable: bool | None = None,
    model_sampling=None,
    **options,
) -> torch.Tensor:
    """ComfyUI's `KSAMPLER.sample` minus the inpainting wrapper: scale the noise onto the (model-space)
    latent for sigmas[0] (`noise_scaling`, with max_denoise), run the sampler, undo the scaling.

    `model` is the guided denoiser (masking already inside it); `model_sampling` defaults to
    `model.model_sampling`.  An empty `sigmas` returns `latent_image` (ComfyUI: nothing to do).
    """
    if sigmas.shape[-1] == 0:
        return latent_image
    ms = model_sampling if model_sampling is not None else getattr(model, "model_sampling", None)
    if ms is None:
        raise ValueError("ksampler_sample needs a model_sampling (argument or model.model_sampling)")
    x = ms.noise_scaling(sigmas[0], noise, latent_image, max_denoise(ms, sigmas))
    samples = get_sampler(sampler_name)(model, x, sigmas, extra_args=dict(extra_args or {}), callback=callback, disable=disable, **options)
    return ms.inverse_noise_scaling(sigmas[-1], samples)
