"""Plumbing every sampler loop shares: the denoiser call with the step's sigma spread over the batch,
the per-step progress report, and the walk over the schedule's intervals."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch


class SamplerRun:
    """One sampling run's fixed inputs: the guided denoiser, the extra arguments it takes on every
    call, and the progress callback (which may be absent)."""

    def __init__(self, model, x: torch.Tensor, extra_args: dict | None = None, callback: Callable[[dict], None] | None = None):
        self.model = model
        self.extra_args = {} if extra_args is None else extra_args
        self.callback = callback
        self._per_sample = x.new_ones([x.shape[0]])

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """D(x, sigma) with the scalar sigma given to every batch item."""
        return self.model(x, sigma * self._per_sample, **self.extra_args)

    def report(self, i: int, x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor, sigma_hat=None) -> None:
        """The step-`i` progress callback; `sigma_hat` is the (churned) sigma the model saw."""
        if self.callback is not None:
            seen = sigma if sigma_hat is None else sigma_hat
            self.callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": seen, "denoised": denoised})


def intervals(sigmas: torch.Tensor) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(i, sigmas[i], sigmas[i + 1]) for each step of the schedule."""
    for i in range(len(sigmas) - 1):
        yield i, sigmas[i], sigmas[i + 1]
