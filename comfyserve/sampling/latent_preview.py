"""Step previews while sampling: the denoised latent as a small JPEG, when a prompt asks for one.

`latent2rgb` projects each latent pixel's channels to RGB with ComfyUI's per-model factors (a
64×64 image gives an 8×8 preview, enlarged to the preview size as ComfyUI does). `taesd` and
`auto` fall back to it until a TAESD decoder is found in models/vae_approx.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from comfyserve.engine import previews
from comfyserve.engine.progress import Preview

log = logging.getLogger(__name__)

# Latent channel → (R, G, B) weights, and an optional bias, per latent family (ComfyUI's values).
LATENT_RGB: dict[str, tuple[list[list[float]], list[float] | None]] = {
    "sd1": ([[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350],
             [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]], None),
    "sdxl": ([[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068],
              [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]], [0.1084, -0.0175, -0.0011]),
}
LATENT_FAMILY = {"sd1": "sd1", "sd2": "sd1", "sdxl": "sdxl", "sdxl_refiner": "sdxl"}

Previewer = Callable[[torch.Tensor], Preview]


def latent_to_rgb(x0: torch.Tensor, family: str) -> torch.Tensor:
    """The first batch item of a denoised latent [B,C,h,w] as uint8 RGB [h,w,3]."""
    factors, bias = LATENT_RGB[LATENT_FAMILY.get(family, "sd1")]
    weight = torch.tensor(factors, dtype=x0.dtype, device=x0.device).transpose(0, 1)
    offset = torch.tensor(bias, dtype=x0.dtype, device=x0.device) if bias else None
    rgb = torch.nn.functional.linear(x0[0:1].movedim(1, -1), weight, bias=offset)[0]
    return ((rgb + 1.0) / 2.0).clamp(0, 1).mul(0xFF).to(device="cpu", dtype=torch.uint8)


def make_previewer(family: str) -> Previewer | None:
    """The previewer the running prompt asked for, or None (no previews: ComfyUI's default)."""
    method = previews.method()
    if method == "none":
        return None
    if method == "taesd":
        log.warning("TAESD previews need models/vae_approx/taesd_decoder; using latent2rgb")

    def preview(x0: torch.Tensor) -> Preview:
        from PIL import Image

        picture = Image.fromarray(latent_to_rgb(x0.float(), family).numpy())
        encoded = previews.encode_preview(("JPEG", picture, previews.max_size()))
        assert encoded is not None
        return encoded

    return preview
