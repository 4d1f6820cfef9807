"""One KSampler run, as ComfyUI's `common_ksampler` does it.

noise (from the seed, per batch index, or zeros) → sigmas for the scheduler, steps, denoise and
start/end steps → latent into model space → conds prepared → the sampler function called with
the CFG denoiser (wrapped for inpainting when the latent has a noise mask) → back to raw VAE
space. The model is put on its compute device first (comfyserve/models/memory.py) and the
result comes back on the intermediate device (the CPU). Progress goes to the node's progress
reporter once per step, with a preview image when the prompt asked for previews; interrupts
are checked every step.
"""

from __future__ import annotations

from typing import Any

import torch

from comfyserve.engine import interrupt, progress
from comfyserve.models import devices, memory
from comfyserve.sampling import guidance
from comfyserve.sampling.latent_preview import make_previewer
from comfyserve.sampling.noise import empty_noise, inpaint_random_noise, prepare_noise
from comfyserve.sampling.samplers import INPAINT_RANDOM_NOISE_SAMPLERS, ksampler_sample
from comfyserve.sampling.schedulers import sigmas_for


def common_ksampler(
    model: Any,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: list,
    negative: list,
    latent: dict[str, Any],
    denoise: float = 1.0,
    disable_noise: bool = False,
    start_step: int | None = None,
    last_step: int | None = None,
    force_full_denoise: bool = False,
) -> dict[str, Any]:
    """The KSampler/KSamplerAdvanced body: returns the new LATENT dict."""
    latent_image = latent["samples"]
    if disable_noise:
        noise = empty_noise(latent_image)
    else:
        noise = prepare_noise(latent_image, seed, latent.get("batch_index"))
    sigmas = sigmas_for(model.model_sampling, scheduler, steps, sampler_name=sampler_name, denoise=denoise,
                        start_step=start_step, last_step=last_step, force_full_denoise=force_full_denoise)
    samples = sample(model, noise, sigmas, sampler_name, cfg, positive, negative, latent_image,
                     latent.get("noise_mask"), seed)
    out = dict(latent)
    out["samples"] = samples
    return out


def sample(
    model: Any,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    sampler_name: str,
    cfg: float,
    positive: list,
    negative: list,
    latent_image: torch.Tensor,
    noise_mask: torch.Tensor | None,
    seed: int,
) -> torch.Tensor:
    if sigmas.shape[-1] == 0:
        return latent_image  # nothing to do (start step past the end, or denoise 0)
    memory.load_models([model], memory.sampling_memory(model, noise.shape))
    device = getattr(model, "device", torch.device("cpu"))
    sampling = model.model_sampling
    mask = guidance.prepare_mask(noise_mask, noise.shape, device) if noise_mask is not None else None
    noise = noise.to(device)
    latent_image = latent_image.to(device)
    sigmas = sigmas.to(device)
    if torch.count_nonzero(latent_image) > 0:  # an empty latent stays as it is (no shift)
        latent_image = model.latent_format.process_in(latent_image)
    conds = guidance.process_conds(
        model, noise, {"positive": guidance.convert_cond(positive), "negative": guidance.convert_cond(negative)}, device)
    cfg_denoiser = guidance.CfgDenoiser(model, conds["positive"], conds["negative"], cfg)
    # Outside the mask the latent is re-noised with the initial noise (ddim: fresh noise, seed + 1).
    keep_noise = inpaint_random_noise(noise, seed) if sampler_name in INPAINT_RANDOM_NOISE_SAMPLERS else noise
    denoiser = guidance.InpaintDenoiser(cfg_denoiser, sampling, latent_image, keep_noise, mask)
    previewer = make_previewer(getattr(model, "family", "sd1"))
    total = len(sigmas) - 1

    def callback(state: dict[str, Any]) -> None:
        interrupt.throw_if_interrupted()
        preview = previewer(state["denoised"]) if previewer is not None else None
        progress.report(state["i"] + 1, total, preview)

    samples = ksampler_sample(sampler_name, denoiser, noise, latent_image, sigmas,
                              extra_args={"seed": seed, "model_options": {}}, callback=callback, disable=True)
    return model.latent_format.process_out(samples.to(torch.float32)).to(devices.policy().intermediate_device)
