"""CFG++ samplers (Chung et al. 2024, arXiv:2406.08070): the step direction uses the *unconditional*
prediction while the guided prediction sets the landing point.  They read the unconditional
prediction through the post-CFG hook (see `_common.UncondCapture`)."""

from __future__ import annotations

import torch

from ._common import (
    UncondCapture,
    get_ancestral_step,
    half_log_snr,
    model_sampling_of,
    noise_scale_of,
    step_noise_sampler,
    to_d,
)


@torch.no_grad()
def sample_euler_ancestral_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None):
    """Ancestral Euler (CFG++)."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = step_noise_sampler(x, extra_args, noise_sampler)
    s_noise = s_noise * noise_scale_of(model_sampling_of(model))
    uncond = UncondCapture()
    extra_args = uncond.install(extra_args)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        alpha_s = sigmas[i] * half_log_snr(sigmas[i]).exp()
        alpha_t = sigmas[i + 1] * half_log_snr(sigmas[i + 1]).exp()
        d = to_d(x, sigmas[i], alpha_s * uncond.get())
        sigma_down, sigma_up = get_ancestral_step(sigmas[i] / alpha_s, sigmas[i + 1] / alpha_t, eta=eta)
        sigma_down = alpha_t * sigma_down
        x = alpha_t * denoised + sigma_down * d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_euler_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """Euler (CFG++): the ancestral variant without noise."""
    return sample_euler_ancestral_cfg_pp(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, eta=0.0, s_noise=0.0)


@torch.no_grad()
def sample_dpmpp_2s_ancestral_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None):
    """DPM-Solver++(2S) ancestral (CFG++), as ComfyUI 0.8 has it: each stage starts from x shifted by
    (first guided prediction - the latest unconditional one) and steps with the guided predictions;
    the final step to sigma 0 lands on the guided prediction."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = step_noise_sampler(x, extra_args, noise_sampler)
    uncond = UncondCapture()
    extra_args = uncond.install(extra_args)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        uncond_denoised = uncond.get()
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigma_down == 0:
            d = to_d(x, sigmas[i], uncond_denoised)
            x = denoised + d * sigma_down
        else:
            t, t_next = sigmas[i].log().neg(), sigma_down.log().neg()
            h = t_next - t
            s = t + 0.5 * h
            x_2 = (s.neg().exp() / t.neg().exp()) * (x + (denoised - uncond_denoised)) - (-h * 0.5).expm1() * denoised
            denoised_2 = model(x_2, s.neg().exp() * s_in, **extra_args)
            # ComfyUI reads the captured uncond again here, i.e. the midpoint evaluation's.
            x = (t_next.neg().exp() / t.neg().exp()) * (x + (denoised - uncond.get())) - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_2m_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """DPM-Solver++(2M) (CFG++)."""
    extra_args = {} if extra_args is None else extra_args
    uncond = UncondCapture()
    extra_args = uncond.install(extra_args)
    s_in = x.new_ones([x.shape[0]])
    old_uncond_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        uncond_denoised = uncond.get()
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        t, t_next = sigmas[i].log().neg(), sigmas[i + 1].log().neg()
        h = t_next - t
        if old_uncond_denoised is None or sigmas[i + 1] == 0:
            denoised_mix = -torch.exp(-h) * uncond_denoised
        else:
            h_last = t - sigmas[i - 1].log().neg()
            r = h_last / h
            denoised_mix = -torch.exp(-h) * uncond_denoised - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old_uncond_denoised)
        x = denoised + denoised_mix + torch.exp(-h) * x
        old_uncond_denoised = uncond_denoised
    return x
