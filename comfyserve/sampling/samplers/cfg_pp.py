"""CFG++ (Chung et al. 2024, arXiv:2406.08070): the guided prediction decides where a step lands,
the *unconditional* one the direction the remaining noise points in.  The unconditional prediction
arrives through the post-CFG hook (`_common.UncondCapture`)."""

from __future__ import annotations

import torch

from ._common import guided_run, model_sampling_of, noise_scale_of, step_noise_sampler
from ._run import intervals
from ._steps import LogSNRStep, add_noise, ancestral_split, half_log_snr, slope
from .dpmpp import two_stage_step


@torch.no_grad()
def sample_euler_ancestral_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None):
    """Ancestral Euler (CFG++): land on alpha_next * D_guided, move on along the unconditional noise
    direction for sigma_down, then add fresh noise of std sigma_up (all in the alpha-scaled frame)."""
    noise_sampler = step_noise_sampler(x, extra_args or {}, noise_sampler)
    s_noise = s_noise * noise_scale_of(model_sampling_of(model))
    run, uncond = guided_run(model, x, extra_args, callback)
    for i, sigma, sigma_next in intervals(sigmas):
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        step = LogSNRStep(sigma, sigma_next)
        noise_direction = slope(x, sigma, step.alpha * uncond.get())
        split = ancestral_split(sigma / step.alpha, sigma_next / step.alpha_next, eta)
        x = step.alpha_next * denoised + (step.alpha_next * split.sigma_down) * noise_direction
        if eta > 0 and s_noise > 0:
            x = add_noise(x, step.alpha_next * noise_sampler(sigma, sigma_next), s_noise, split.sigma_up)
    return x


@torch.no_grad()
def sample_euler_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """Euler (CFG++): the ancestral form without noise."""
    return sample_euler_ancestral_cfg_pp(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, eta=0.0, s_noise=0.0)


@torch.no_grad()
def sample_dpmpp_2s_ancestral_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None):
    """DPM-Solver++(2S) ancestral (CFG++) in ComfyUI 0.8's form: both stages step with the guided
    predictions from x shifted by (step's guided prediction - the latest unconditional one), so the
    second stage's shift uses the midpoint's unconditional prediction; a step that reaches sigma 0
    lands on the guided prediction."""
    noise_sampler = step_noise_sampler(x, extra_args or {}, noise_sampler)
    run, uncond = guided_run(model, x, extra_args, callback)
    for i, sigma, sigma_next in intervals(sigmas):
        denoised = run.denoise(x, sigma)
        uncond_denoised = uncond.get()
        split = ancestral_split(sigma, sigma_next, eta)
        run.report(i, x, sigma, denoised)
        if split.sigma_down == 0:
            x = denoised + slope(x, sigma, uncond_denoised) * split.sigma_down
        else:
            def shifted(x=x, guided=denoised):
                return x + (guided - uncond.get())

            x = two_stage_step(run, x, denoised, sigma, split.sigma_down, origin=shifted)
        if sigma_next > 0:
            x = add_noise(x, noise_sampler(sigma, sigma_next), s_noise, split.sigma_up)
    return x


@torch.no_grad()
def sample_dpmpp_2m_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """DPM-Solver++(2M) (CFG++): x_next = D_guided + e^-h (x - D_uncond), plus the 2M correction
    from the previous unconditional prediction (not on the first step or the step to sigma 0)."""
    run, uncond = guided_run(model, x, extra_args, callback)
    previous_uncond = None
    for i, sigma, sigma_next in intervals(sigmas):
        denoised = run.denoise(x, sigma)
        uncond_denoised = uncond.get()
        run.report(i, x, sigma, denoised)
        lam = half_log_snr(sigma)
        h = half_log_snr(sigma_next) - lam
        decay = torch.exp(-h)
        shift = -decay * uncond_denoised
        if previous_uncond is not None and sigma_next != 0:
            step_ratio = (lam - half_log_snr(sigmas[i - 1])) / h
            shift = shift - torch.expm1(-h) * (1 / (2 * step_ratio)) * (denoised - previous_uncond)
        x = denoised + shift + decay * x
        previous_uncond = uncond_denoised
    return x
