"""An analytic denoiser for sampler tests: data x0 ~ N(mu, s^2) per element, so the exact denoiser is
D(x, sigma) = mu + s^2 / (s^2 + sigma^2) * (x - mu) and the probability-flow ODE started at x_T maps
it to mu + (x_T - mu) * s / sqrt(s^2 + sigma_T^2)."""

from __future__ import annotations

import torch

from comfyserve.sampling.model_sampling import make_model_sampling
from comfyserve.sampling.samplers import run_post_cfg_functions

MS = make_model_sampling("eps")


def gaussian_denoised(x: torch.Tensor, sigma: torch.Tensor, mu: float, s: float) -> torch.Tensor:
    sig = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(torch.float64)
    return (mu + s**2 / (s**2 + sig**2) * (x.to(torch.float64) - mu)).to(x.dtype)


class GaussianDenoiser:
    """k-diffusion denoiser with ComfyUI's guidance contract: cond and uncond are Gaussians with means
    `mu` and `mu_uncond`; denoised = uncond + (cond - uncond) * cfg, then the post-CFG hooks."""

    def __init__(self, mu: float = 0.3, s: float = 0.5, cfg: float = 1.0, mu_uncond: float | None = None, model_sampling=MS):
        self.mu = mu
        self.s = s
        self.cfg = cfg
        self.mu_uncond = mu if mu_uncond is None else mu_uncond
        self.model_sampling = model_sampling
        self.calls = 0
        self.sigmas_seen: list[float] = []

    def __call__(self, x, sigma, model_options=None, seed=None, denoise_mask=None):
        self.calls += 1
        self.sigmas_seen.append(float(sigma[0]))
        cond = gaussian_denoised(x, sigma, self.mu, self.s)
        uncond = gaussian_denoised(x, sigma, self.mu_uncond, self.s)
        denoised = uncond + (cond - uncond) * self.cfg
        return run_post_cfg_functions(
            model_options, denoised, cond_denoised=cond, uncond_denoised=uncond, cond_scale=self.cfg, sigma=sigma, input=x
        )

    def start(self, noise: torch.Tensor, sigma0) -> torch.Tensor:
        """x_T drawn from the exact marginal at sigma0: mu + sqrt(s^2 + sigma0^2) * noise."""
        return self.mu + noise * (self.s**2 + torch.as_tensor(sigma0, dtype=noise.dtype) ** 2).sqrt()

    def ode_solution(self, noise: torch.Tensor, sigma_end: float = 0.0) -> torch.Tensor:
        """Where the probability-flow ODE takes `start(noise, .)` at sigma_end."""
        return self.mu + noise * (self.s**2 + sigma_end**2) ** 0.5
