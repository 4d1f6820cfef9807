"""ComfyUI's `ModelSamplingDiscrete` and the EPS / V_PREDICTION / X0 parameterisations.

Sigmas live in k-diffusion's "variance exploding" space: a noisy latent is `x = x0 + sigma * eps`.
The discrete table comes from the LDM "linear" beta schedule (betas are the squares of a linspace of
square roots), computed in float64 and stored as float32, exactly as ComfyUI keeps it:

    betas           = linspace(sqrt(0.00085), sqrt(0.012), 1000) ** 2        (float64)
    alphas_cumprod  = cumprod(1 - betas)
    sigmas          = sqrt((1 - alphas_cumprod) / alphas_cumprod)            -> float32
    log_sigmas      = log(sigmas in float64)                                 -> float32

`timestep(sigma)` is the index of the nearest table entry in log space (an argmin, no
interpolation); `sigma(t)` interpolates log sigma linearly between the two neighbouring entries.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "EPS",
    "V_PREDICTION",
    "X0",
    "ModelSamplingDiscrete",
    "ModelSamplingDiscreteEPS",
    "ModelSamplingDiscreteV",
    "ModelSamplingDiscreteX0",
    "make_beta_schedule",
    "make_model_sampling",
    "rescale_zero_terminal_snr_sigmas",
]


def _per_batch(sigma: torch.Tensor, ndim: int) -> torch.Tensor:
    """A sigma of shape [B] (or a scalar) shaped to broadcast against a tensor with `ndim` dims."""
    return sigma.view(sigma.shape[:1] + (1,) * (ndim - 1))


class EPS:
    """The model predicts the noise: denoised = x - sigma * eps (inputs scaled to unit variance)."""

    prediction = "eps"
    sigma_data = 1.0

    def calculate_input(self, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        sigma = _per_batch(sigma, noise.ndim)
        return noise / (sigma**2 + self.sigma_data**2) ** 0.5

    def calculate_denoised(self, sigma: torch.Tensor, model_output: torch.Tensor, model_input: torch.Tensor) -> torch.Tensor:
        sigma = _per_batch(sigma, model_output.ndim)
        return model_input - model_output * sigma

    def noise_scaling(self, sigma: torch.Tensor, noise: torch.Tensor, latent_image: torch.Tensor, max_denoise: bool = False) -> torch.Tensor:
        """The sampler's starting point: `latent + noise * sigma`, or `* sqrt(1 + sigma^2)` when the
        schedule starts at (or above) the model's largest sigma (ComfyUI's "max_denoise")."""
        sigma = _per_batch(torch.as_tensor(sigma), noise.ndim)
        if max_denoise:
            scaled = noise * torch.sqrt(1.0 + sigma**2.0)
        else:
            scaled = noise * sigma
        scaled += latent_image
        return scaled

    def inverse_noise_scaling(self, sigma: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        return latent


class V_PREDICTION(EPS):
    """The model predicts v (SD2-768, v-prediction SDXL finetunes)."""

    prediction = "v"

    def calculate_denoised(self, sigma: torch.Tensor, model_output: torch.Tensor, model_input: torch.Tensor) -> torch.Tensor:
        sigma = _per_batch(sigma, model_output.ndim)
        sd2 = self.sigma_data**2
        var = sigma**2 + sd2
        return model_input * sd2 / var - model_output * sigma * self.sigma_data / var**0.5


class X0(EPS):
    """The model predicts the clean latent directly."""

    prediction = "x0"

    def calculate_denoised(self, sigma: torch.Tensor, model_output: torch.Tensor, model_input: torch.Tensor) -> torch.Tensor:
        return model_output


def make_beta_schedule(schedule: str, timesteps: int, linear_start: float, linear_end: float, cosine_s: float = 8e-3) -> torch.Tensor:
    """LDM's `make_beta_schedule` (float64)."""
    if schedule == "linear":
        return torch.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=torch.float64) ** 2
    if schedule == "sqrt_linear":
        return torch.linspace(linear_start, linear_end, timesteps, dtype=torch.float64)
    if schedule == "sqrt":
        return torch.linspace(linear_start, linear_end, timesteps, dtype=torch.float64) ** 0.5
    if schedule == "cosine":
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps + cosine_s
        alphas = torch.cos(steps / (1 + cosine_s) * math.pi / 2).pow(2)
        alphas = alphas / alphas[0]
        return (1 - alphas[1:] / alphas[:-1]).clamp(min=0, max=0.999)
    raise ValueError(f"schedule '{schedule}' unknown.")


def rescale_zero_terminal_snr_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    """Zero terminal SNR (Lin et al. 2023) as ComfyUI applies it for `zsnr` models; the last
    alphas_cumprod is pinned to a tiny positive value so that sigma_max stays finite."""
    alphas_bar_sqrt = (1 / (sigmas * sigmas + 1)).sqrt()
    first = alphas_bar_sqrt[0].clone()
    last = alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt**2
    alphas_bar[-1] = 4.8973451890853435e-08
    return ((1 - alphas_bar) / alphas_bar) ** 0.5


class ModelSamplingDiscrete:
    """The 1000-entry sigma table of DDPM-trained models (SD1.x, SD2.x, SDXL).

    Combine with a parameterisation (EPS, V_PREDICTION, X0) - see `make_model_sampling`.
    """

    def __init__(
        self,
        beta_schedule: str = "linear",
        linear_start: float = 0.00085,
        linear_end: float = 0.012,
        timesteps: int = 1000,
        zsnr: bool = False,
    ):
        self.beta_schedule = beta_schedule
        self.linear_start = linear_start
        self.linear_end = linear_end
        self.zsnr = zsnr
        betas = make_beta_schedule(beta_schedule, timesteps, linear_start, linear_end)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.num_timesteps = int(betas.shape[0])
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        if zsnr:
            sigmas = rescale_zero_terminal_snr_sigmas(sigmas)
        self.set_sigmas(sigmas)

    def set_sigmas(self, sigmas: torch.Tensor) -> None:
        self.sigmas = sigmas.float()
        self.log_sigmas = sigmas.log().float()

    def to(self, device) -> ModelSamplingDiscrete:
        self.sigmas = self.sigmas.to(device)
        self.log_sigmas = self.log_sigmas.to(device)
        return self

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return 1 / (self.sigmas.double() ** 2 + 1)

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Nearest table index in log-sigma space (int64, same shape and device as `sigma`)."""
        sigma = torch.as_tensor(sigma)
        dists = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).to(sigma.device)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """Log-linear interpolation of the table at a (fractional) timestep, clamped to [0, N-1]."""
        timestep = torch.as_tensor(timestep)
        t = torch.clamp(timestep.float().to(self.log_sigmas.device), min=0, max=len(self.sigmas) - 1)
        low = t.floor().long()
        high = t.ceil().long()
        w = t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]
        return log_sigma.exp().to(timestep.device)

    def percent_to_sigma(self, percent: float) -> float:
        """Sampling progress (0 = start, 1 = end) to sigma, as conditioning timestep ranges use it."""
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return self.sigma(torch.tensor((1.0 - percent) * 999.0)).item()


class ModelSamplingDiscreteEPS(EPS, ModelSamplingDiscrete):
    pass


class ModelSamplingDiscreteV(V_PREDICTION, ModelSamplingDiscrete):
    pass


class ModelSamplingDiscreteX0(X0, ModelSamplingDiscrete):
    pass


_BY_PREDICTION = {
    "eps": ModelSamplingDiscreteEPS,
    "v": ModelSamplingDiscreteV,
    "v_prediction": ModelSamplingDiscreteV,
    "x0": ModelSamplingDiscreteX0,
}


def make_model_sampling(prediction: str = "eps", **settings) -> ModelSamplingDiscrete:
    """`ModelSamplingDiscrete` with a parameterisation: `prediction` is "eps", "v" or "x0";
    `settings` are ComfyUI's sampling_settings (beta_schedule, linear_start, linear_end,
    timesteps, zsnr). The defaults are SD1/SD2/SDXL's."""
    try:
        cls = _BY_PREDICTION[prediction]
    except KeyError:
        raise ValueError(f"unknown prediction type {prediction!r}") from None
    return cls(**settings)
