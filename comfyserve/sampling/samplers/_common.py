"""What the samplers need from their surroundings: the denoiser's model sampling (noise scale,
re-noising, percent-to-sigma), the step-noise source, and the CFG++ hook through which a sampler
receives the unconditional prediction."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..model_sampling import ModelSamplingDiscrete, make_model_sampling
from ..noise import BrownianTreeNoiseSampler, default_noise_sampler
from ._run import SamplerRun

_DEFAULT_MODEL_SAMPLING: ModelSamplingDiscrete | None = None


def model_sampling_of(model) -> ModelSamplingDiscrete:
    """The denoiser's `model_sampling` attribute; SD1's EPS table when it has none."""
    ms = getattr(model, "model_sampling", None)
    if ms is not None:
        return ms
    global _DEFAULT_MODEL_SAMPLING
    if _DEFAULT_MODEL_SAMPLING is None:
        _DEFAULT_MODEL_SAMPLING = make_model_sampling("eps")
    return _DEFAULT_MODEL_SAMPLING


def noise_scale_of(model_sampling) -> float:
    """The model's relative noise scale, which multiplies the SDE samplers' s_noise (1 if it has none)."""
    return getattr(model_sampling, "noise_scale", 1.0)


def step_noise_sampler(x: torch.Tensor, extra_args: dict, noise_sampler=None):
    """The noise sampler a stochastic sampler uses: the one given, else seed(+1)-seeded randn."""
    if noise_sampler is not None:
        return noise_sampler
    return default_noise_sampler(x, seed=extra_args.get("seed", None))


def brownian_noise_sampler(x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict, noise_sampler=None, cpu: bool = True):
    """The SDE samplers' Brownian-tree noise over [smallest positive sigma, largest sigma]."""
    if noise_sampler is not None:
        return noise_sampler
    sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
    return BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=extra_args.get("seed", None), cpu=cpu)


# -- CFG++: the unconditional prediction ----------------------------------------------------------
#
# Contract with the guidance layer (ComfyUI's own): `extra_args["model_options"]` is a dict; after
# combining cond and uncond into `denoised`, the guidance calls every function in
# `model_options.get("sampler_post_cfg_function", [])` in order with
#     {"denoised", "cond_denoised", "uncond_denoised", "cond_scale", "sigma", "input", "model",
#      "model_options", "cond", "uncond"}
# and uses each return value as the new `denoised`.  With `model_options["disable_cfg1_optimization"]`
# true it must evaluate the uncond branch even when cfg == 1.  `run_post_cfg_functions` does the
# calling part.

POST_CFG_KEY = "sampler_post_cfg_function"


def set_post_cfg_function(model_options: dict | None, fn: Callable[[dict], torch.Tensor], disable_cfg1_optimization: bool = False) -> dict:
    """A copy of `model_options` with `fn` appended to the post-CFG hooks (ComfyUI's
    `set_model_options_post_cfg_function`); the given dict is not modified."""
    options = dict(model_options or {})
    options[POST_CFG_KEY] = list(options.get(POST_CFG_KEY, [])) + [fn]
    if disable_cfg1_optimization:
        options["disable_cfg1_optimization"] = True
    return options


def run_post_cfg_functions(model_options: dict | None, denoised: torch.Tensor, **args) -> torch.Tensor:
    """For the guidance layer: pass `denoised` through the post-CFG hooks. `args` should carry
    cond_denoised, uncond_denoised, cond_scale, sigma, input (and model, cond, uncond when known)."""
    for fn in (model_options or {}).get(POST_CFG_KEY, []):
        denoised = fn({**args, "denoised": denoised, "model_options": model_options})
    return denoised


class UncondCapture:
    """Registers a post-CFG hook that remembers the latest unconditional prediction."""

    def __init__(self) -> None:
        self.uncond_denoised: torch.Tensor | None = None

    def __call__(self, args: dict) -> torch.Tensor:
        self.uncond_denoised = args["uncond_denoised"]
        return args["denoised"]

    def install(self, extra_args: dict | None) -> dict:
        """A copy of extra_args whose model_options carry this hook (cfg1 optimisation off)."""
        extra_args = dict(extra_args or {})
        extra_args["model_options"] = set_post_cfg_function(extra_args.get("model_options"), self, disable_cfg1_optimization=True)
        return extra_args

    def get(self) -> torch.Tensor:
        if self.uncond_denoised is None:
            raise RuntimeError(
                "this CFG++ sampler needs the unconditional prediction: the guidance did not call the "
                "'sampler_post_cfg_function' hooks of extra_args['model_options']"
            )
        return self.uncond_denoised


def guided_run(model, x, extra_args, callback, cfg_pp: bool = True) -> tuple[SamplerRun, UncondCapture | None]:
    """A sampler run and, for CFG++ (`cfg_pp`), the capture its denoiser calls report their
    unconditional prediction to (None otherwise)."""
    if not cfg_pp:
        return SamplerRun(model, x, extra_args, callback), None
    uncond = UncondCapture()
    return SamplerRun(model, x, uncond.install(extra_args), callback), uncond
