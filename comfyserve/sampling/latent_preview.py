"""Step previews while sampling: the denoised latent as a small JPEG, when a prompt asks for one.

`latent2rgb` projects each latent pixel's channels to RGB with ComfyUI's per-model factors (a
64×64 image gives an 8×8 preview, enlarged to the preview size as ComfyUI does). `taesd` decodes
the latent with the family's TAESD decoder from models/vae_approx (the first file whose name
starts with `taesd_decoder` for SD1/SD2, `taesdxl_decoder` for SDXL), an image of the full size,
and falls back to latent2rgb with a warning when there is none. `auto` is latent2rgb, as in
ComfyUI 0.8 (it no longer picks TAESD by itself). The decoder is loaded on the first preview of
a run, on the sampling device, and cached per file (comfyserve.models.taesd).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

from comfyserve import runtime
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
# The name each latent family's TAESD decoder file starts with, in models/vae_approx.
TAESD_DECODERS = {"sd1": "taesd_decoder", "sdxl": "taesdxl_decoder"}

Previewer = Callable[[torch.Tensor], Preview]


def to_uint8(rgb: torch.Tensor) -> torch.Tensor:
    """An image in [-1, 1] as uint8 on the CPU (ComfyUI's preview conversion)."""
    return ((rgb + 1.0) / 2.0).clamp(0, 1).mul(0xFF).to(device="cpu", dtype=torch.uint8)


def latent_to_rgb(x0: torch.Tensor, family: str) -> torch.Tensor:
    """The first batch item of a denoised latent [B,C,h,w] as uint8 RGB [h,w,3]."""
    factors, bias = LATENT_RGB[LATENT_FAMILY.get(family, "sd1")]
    weight = torch.tensor(factors, dtype=x0.dtype, device=x0.device).transpose(0, 1)
    offset = torch.tensor(bias, dtype=x0.dtype, device=x0.device) if bias else None
    rgb = torch.nn.functional.linear(x0[0:1].movedim(1, -1), weight, bias=offset)[0]
    return to_uint8(rgb)


def taesd_to_rgb(decoder, x0: torch.Tensor) -> torch.Tensor:
    """The first batch item of a denoised latent (model space, as the sampler gives it), decoded
    by a TAESD decoder, as uint8 RGB [8h,8w,3]."""
    return to_uint8(decoder.decode(x0[0:1])[0].movedim(0, -1).float())


def taesd_decoder_path(family: str) -> Path | None:
    """The family's TAESD decoder file in models/vae_approx, or None."""
    prefix = TAESD_DECODERS[LATENT_FAMILY.get(family, "sd1")]
    folders = runtime.folders()
    name = next((n for n in folders.filename_list("vae_approx") if n.startswith(prefix)), None)
    return folders.full_path("vae_approx", name) if name is not None else None


def _encode(rgb: torch.Tensor) -> Preview:
    from PIL import Image

    encoded = previews.encode_preview(("JPEG", Image.fromarray(rgb.numpy()), previews.max_size()))
    assert encoded is not None
    return encoded


def make_previewer(family: str) -> Previewer | None:
    """The previewer the running prompt asked for, or None (no previews: ComfyUI's default)."""
    method = previews.method()
    if method == "none":
        return None
    if method == "taesd":
        path = taesd_decoder_path(family)
        if path is not None:
            return _taesd_previewer(path)
        log.warning("TAESD previews asked for, but models/vae_approx has no %s file; using latent2rgb",
                    TAESD_DECODERS[LATENT_FAMILY.get(family, "sd1")])

    def preview(x0: torch.Tensor) -> Preview:
        return _encode(latent_to_rgb(x0.float(), family))

    return preview


def _taesd_previewer(path: Path) -> Previewer:
    from comfyserve.models.taesd import load_decoder

    loaded = []

    def preview(x0: torch.Tensor) -> Preview:
        if not loaded:  # on the first step, where the latent lives
            loaded.append(load_decoder(path, x0.device))
        return _encode(taesd_to_rgb(loaded[0], x0))

    return preview
