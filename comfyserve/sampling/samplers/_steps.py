"""Step formulas shared by the samplers.

Two views of the same reverse process:

- sigma as time (Karras et al. 2022): the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma,
  integrated with Euler-type moves (`slope`, `euler_move`);
- half-log-SNR as time, lambda = log(alpha / sigma) (= -log sigma for these VE-space models):
  exponential integrators (DPM-Solver++, SEEDS, ...) solve the linear part exactly and integrate
  only the data prediction; `LogSNRStep` holds one step's quantities.

Ancestral samplers split each step into a deterministic descent and fresh Gaussian noise
(`ancestral_split`, `add_noise`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """`v` with trailing singleton dims so that it broadcasts against a tensor of `ndim` dims."""
    extra = ndim - v.ndim
    if extra < 0:
        raise ValueError(f"cannot broadcast a {v.ndim}-dim tensor to {ndim} dims")
    return v[(...,) + (None,) * extra]


def slope(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """dx/dsigma of the probability-flow ODE at (x, sigma) given the denoiser's output."""
    return (x - denoised) / append_dims(sigma, x.ndim)


def euler_move(x: torch.Tensor, direction: torch.Tensor, sigma_from, sigma_to) -> torch.Tensor:
    """Follow `direction` (a dx/dsigma) from sigma_from to sigma_to."""
    return x + direction * (sigma_to - sigma_from)


# -- ancestral steps ------------------------------------------------------------------------------


class AncestralSplit(NamedTuple):
    """A step to `sigma_to` taken as a noise-free descent to `sigma_down` followed by fresh noise of
    std `sigma_up`, so that sigma_down^2 + sigma_up^2 = sigma_to^2."""

    sigma_down: torch.Tensor
    sigma_up: torch.Tensor | float


def ancestral_split(sigma_from, sigma_to, eta: float = 1.0) -> AncestralSplit:
    """DDPM's posterior noise level between the two sigmas, scaled by `eta` (0: a plain ODE step)
    and capped at sigma_to."""
    if not eta:
        return AncestralSplit(sigma_to, 0.0)
    posterior_var = sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2
    sigma_up = min(sigma_to, eta * posterior_var**0.5)
    return AncestralSplit((sigma_to**2 - sigma_up**2) ** 0.5, sigma_up)


def add_noise(x: torch.Tensor, noise: torch.Tensor, s_noise, std) -> torch.Tensor:
    """x plus `noise` scaled by the user's s_noise and the step's std."""
    return x + noise * s_noise * std


# -- half-log-SNR time ----------------------------------------------------------------------------


def half_log_snr(sigma: torch.Tensor) -> torch.Tensor:
    """lambda = log(alpha / sigma), which is -log(sigma) for VE-space sigmas (alpha = 1)."""
    return sigma.log().neg()


def sigma_at(lam: torch.Tensor) -> torch.Tensor:
    """The sigma whose half-log-SNR is `lam`."""
    return lam.neg().exp()


def h_phi_1(z: torch.Tensor) -> torch.Tensor:
    """z * phi_1(z) = e^z - 1, the first exponential-integrator weight."""
    return torch.expm1(z)


def h_phi_2(z: torch.Tensor) -> torch.Tensor:
    """z * phi_2(z) = (e^z - 1 - z) / z, the second exponential-integrator weight."""
    return (torch.expm1(z) - z) / z


def exponential_update(x: torch.Tensor, denoised: torch.Tensor, x_weight, denoised_weight) -> torch.Tensor:
    """The data-prediction exponential-integrator update x_weight * x - denoised_weight * denoised.

    With x_weight = (sigma_next / sigma) e^(-h eta) and denoised_weight = alpha_next (e^(-h (1 + eta)) - 1)
    it is DDIM / DPM-Solver++(1) (eta = 0) or its SDE form; higher orders pass a corrected
    prediction or fold their weights into `denoised`."""
    return x_weight * x - denoised_weight * denoised


class LogSNRStep:
    """One step sigma -> sigma_next seen in half-log-SNR: lam, lam_next, h = lam_next - lam and the
    signal scales alpha = sigma * e^lam, alpha_next = sigma_next * e^lam_next.

    With SDE strength eta, the first-order data-prediction update to the fraction r of the step is
        x_r = (sigma_r / sigma) e^(-r h eta) x + alpha_r (1 - e^(-r h (1 + eta))) D
    and the fresh noise it needs has std sigma_r * sqrt(1 - e^(-2 r h eta)); eta = 0 is DDIM.
    """

    def __init__(self, sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float = 0.0):
        self.sigma = sigma
        self.sigma_next = sigma_next
        self.eta = eta
        self.lam = half_log_snr(sigma)
        self.lam_next = half_log_snr(sigma_next)
        self.h = self.lam_next - self.lam
        self.h_eta = self.h * (eta + 1)
        self.alpha = sigma * self.lam.exp()
        self.alpha_next = sigma_next * self.lam_next.exp()

    def point(self, r: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigma, alpha) of the intermediate point at fraction r of the step (log-SNR lerp)."""
        lam_r = torch.lerp(self.lam, self.lam_next, r)
        sigma_r = sigma_at(lam_r)
        return sigma_r, sigma_r * lam_r.exp()

    def x_decay(self, sigma_r: torch.Tensor, r: float = 1.0) -> torch.Tensor:
        """Weight of x in the update to the point at fraction r (whose sigma is sigma_r)."""
        return sigma_r / self.sigma * (-r * self.h * self.eta).exp()

    def phi_1(self, r: float = 1.0) -> torch.Tensor:
        """z phi_1(z) = e^z - 1 at z = -r h (1 + eta): minus the weight of a constant prediction."""
        return h_phi_1(-r * self.h_eta)

    def phi_2(self, r: float = 1.0) -> torch.Tensor:
        """z phi_2(z) at z = -r h (1 + eta), which weights the prediction's change over the step."""
        return h_phi_2(-r * self.h_eta)

    def first_order(self, x: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        """The whole step's update with a constant data prediction (no noise added)."""
        return exponential_update(x, denoised, self.x_decay(self.sigma_next), self.alpha_next * self.phi_1())

    def slope_weight(self) -> torch.Tensor:
        """(e^(-h') - 1) / h' + 1 with h' = h (1 + eta): the weight of the prediction's first
        derivative (per unit h) in the second-order multistep SDE update."""
        return self.phi_1() / self.h_eta + 1

    def relative_noise_std(self, r: float = 1.0) -> torch.Tensor:
        """sqrt(1 - e^(-2 r h eta)): the std of the noise the SDE adds over fraction r, per unit sigma_r."""
        return (-2 * r * self.h * self.eta).expm1().neg().sqrt()


def weighted_sum(weights, values):
    """weights[0] * values[0] + weights[1] * values[1] + ..., summed left to right."""
    total = weights[0] * values[0]
    for w, v in zip(weights[1:], values[1:], strict=True):
        total = total + w * v
    return total
