"""ComfyUI's random numbers: the initial latent noise and the samplers' step noise.

- `prepare_noise`: the global CPU generator re-seeded with the seed (`torch.manual_seed`), one
  float32 `randn` for the whole batch - so batch item i is *not* the image of seed + i.  With a
  `batch_index` list, one [1, C, H, W] draw per index 0..max(batch_index) and the drawn rows
  picked in order (so a latent batch cut out of a larger one keeps its noise).  Always on the CPU.
- `default_noise_sampler`: the step noise of ancestral / stochastic samplers - a private
  `torch.Generator` on x's device seeded with seed + 1 when x is on the CPU (seed unchanged on a
  GPU), one `randn(x.shape)` per call.
- `BrownianTreeNoiseSampler`: the SDE samplers' noise - torchsde Brownian trees over
  [sigma_min, sigma_max] seeded with the seed (trees on the CPU unless `cpu=False`, which is what the
  `_gpu` sampler variants ask for), returning standard-normal increments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = [
    "BatchedBrownianTree",
    "BrownianTreeNoiseSampler",
    "NoiseSampler",
    "default_noise_sampler",
    "empty_noise",
    "inpaint_random_noise",
    "prepare_noise",
]

NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def prepare_noise(latent_image: torch.Tensor, seed: int, noise_inds: Sequence[int] | None = None) -> torch.Tensor:
    """ComfyUI's `comfy.sample.prepare_noise` (re-seeds torch's global CPU generator, as ComfyUI does)."""
    generator = torch.manual_seed(seed)
    if noise_inds is None:
        return torch.randn(latent_image.size(), dtype=latent_image.dtype, layout=latent_image.layout, generator=generator, device="cpu")
    inds = [int(i) for i in noise_inds]
    wanted = set(inds)
    drawn: dict[int, torch.Tensor] = {}
    row_shape = [1] + list(latent_image.size())[1:]
    for i in range(max(inds) + 1):
        row = torch.randn(row_shape, dtype=latent_image.dtype, layout=latent_image.layout, generator=generator, device="cpu")
        if i in wanted:
            drawn[i] = row
    return torch.cat([drawn[i] for i in inds], dim=0)


def empty_noise(latent_image: torch.Tensor) -> torch.Tensor:
    """KSamplerAdvanced's add_noise = disable: zeros of the latent's shape (CPU)."""
    return torch.zeros(latent_image.size(), dtype=latent_image.dtype, layout=latent_image.layout, device="cpu")


def inpaint_random_noise(noise: torch.Tensor, seed: int | None) -> torch.Tensor:
    """The noise ComfyUI's `ddim` sampler (inpaint option "random") uses to re-noise the kept part of
    a masked latent instead of the initial noise: the global generator re-seeded with seed + 1
    (41 + 1 without a seed), one CPU randn of the noise's shape."""
    generator = torch.manual_seed((41 if seed is None else seed) + 1)
    return torch.randn(noise.shape, generator=generator, device="cpu").to(noise.dtype).to(noise.device)


def default_noise_sampler(x: torch.Tensor, seed: int | None = None) -> NoiseSampler:
    """Step noise for ancestral / stochastic samplers (k-diffusion's `default_noise_sampler` with
    ComfyUI's seeding); without a seed it draws from torch's global generator."""
    if seed is not None:
        if x.device == torch.device("cpu"):
            seed += 1
        generator: torch.Generator | None = torch.Generator(device=x.device)
        generator.manual_seed(seed)
    else:
        generator = None
    size, dtype, layout, device = x.size(), x.dtype, x.layout, x.device

    def sample(sigma, sigma_next) -> torch.Tensor:
        return torch.randn(size, dtype=dtype, layout=layout, device=device, generator=generator)

    return sample


class BatchedBrownianTree:
    """One torchsde `BrownianTree` (or one per batch item when `seed` is a list)."""

    def __init__(self, x: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor, seed=None, cpu: bool = True, w0: torch.Tensor | None = None, **kwargs):
        import torchsde

        self.cpu_tree = cpu
        t0, t1, self.sign = self._sort(t0, t1)
        if w0 is None:
            w0 = torch.zeros_like(x)
        self.batched = False
        if seed is None:
            seeds: tuple = (torch.randint(0, 2**63 - 1, ()).item(),)
        elif isinstance(seed, (tuple, list)):
            if len(seed) != x.shape[0]:
                raise ValueError("Passing a list or tuple of seeds to BatchedBrownianTree requires a length matching the batch size.")
            self.batched = True
            w0 = w0[0]
            seeds = tuple(seed)
        else:
            seeds = (seed,)
        if self.cpu_tree:
            t0, w0, t1 = t0.detach().cpu(), w0.detach().cpu(), t1.detach().cpu()
        self.trees = tuple(torchsde.BrownianTree(t0, w0, t1, entropy=s, **kwargs) for s in seeds)

    @staticmethod
    def _sort(a, b):
        return (a, b, 1) if a < b else (b, a, -1)

    def __call__(self, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        t0, t1, sign = self._sort(t0, t1)
        device, dtype = t0.device, t0.dtype
        if self.cpu_tree:
            t0, t1 = t0.detach().cpu().float(), t1.detach().cpu().float()
        w = torch.stack([tree(t0, t1) for tree in self.trees]).to(device=device, dtype=dtype) * (self.sign * sign)
        return w if self.batched else w[0]


class BrownianTreeNoiseSampler:
    """Standard-normal Brownian increments between two sigmas: W(t1) - W(t0) / sqrt(|t1 - t0|)."""

    def __init__(self, x: torch.Tensor, sigma_min, sigma_max, seed=None, transform=lambda s: s, cpu: bool = False):
        self.transform = transform
        t0 = self.transform(torch.as_tensor(sigma_min))
        t1 = self.transform(torch.as_tensor(sigma_max))
        self.tree = BatchedBrownianTree(x, t0, t1, seed, cpu=cpu)

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        t0 = self.transform(torch.as_tensor(sigma))
        t1 = self.transform(torch.as_tensor(sigma_next))
        return self.tree(t0, t1) / (t1 - t0).abs().sqrt()
