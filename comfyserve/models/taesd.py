"""TAESD step previews: madebyollin's tiny latent decoder on diffusers' `DecoderTiny`.

The decoder files ComfyUI looks for in `models/vae_approx` (`taesd_decoder.pth` for SD1/SD2,
`taesdxl_decoder.pth` for SDXL, or `.safetensors`) hold the original network as one
`nn.Sequential`: index 0 is the input clamp (no weights), then `1` the first conv, `3`–`5` blocks,
`7` a bias-free conv after an upsample, … `18` the last block and `19` the output conv. diffusers'
`DecoderTiny` is the same network with the clamp moved into `forward`, so its `layers.N` is the
file's `N+1`. Files in diffusers' layout (`decoder.layers.N…`) load as they are.

Scale: the decoder takes the latent the diffusion model works in (raw VAE latent × the family's
scale factor, which is what the sampler's `denoised` is), with no further scaling; ComfyUI's
previewer runs its TAESD with scale 1 and shift 0 for that reason (those only change when TAESD is
loaded as a VAE, on raw latents). The network's output is an image in about [0, 1], which
`DecoderTiny` maps to [-1, 1], as ComfyUI's `decode` does.

Decoders are loaded once per file and device through `comfyserve.models.cache.MODELS`, so a file
replaced on disk loads afresh and `/free` drops them.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from comfyserve.models.files import ModelFileError, load_state_dict

# TAESD's decoder shape: 64 channels everywhere, blocks per stage, ×2 nearest upsampling between.
BLOCK_CHANNELS = (64, 64, 64, 64)
BLOCKS_PER_STAGE = (3, 3, 3, 1)
_SEQUENTIAL_KEY = re.compile(r"(\d+)\.(.+)")


def decoder_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A TAESD decoder file's tensors under `DecoderTiny`'s names (`layers.N…`)."""
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        if key.startswith(("decoder.layers.", "layers.")):
            out["layers." + key.split("layers.", 1)[1]] = value
            continue
        rest = key[len("taesd_decoder."):] if key.startswith("taesd_decoder.") else key
        match = _SEQUENTIAL_KEY.fullmatch(rest)
        if match is None or int(match.group(1)) == 0:
            raise ModelFileError(f"not a TAESD decoder key: {key!r}")
        out[f"layers.{int(match.group(1)) - 1}.{match.group(2)}"] = value
    return out


def latent_channels(state_dict: Mapping[str, Any]) -> int:
    """The latent width the decoder takes, from its first conv."""
    weight = state_dict.get("layers.0.weight")
    if weight is None or weight.ndim != 4:
        raise ModelFileError("not a TAESD decoder: no first conv (key 1.weight)")
    return int(weight.shape[1])


def build_decoder(channels: int = 4) -> Any:
    from diffusers.models.autoencoders.vae import DecoderTiny

    return DecoderTiny(in_channels=channels, out_channels=3, num_blocks=BLOCKS_PER_STAGE,
                       block_out_channels=BLOCK_CHANNELS, upsampling_scaling_factor=2, act_fn="relu",
                       upsample_fn="nearest")


class TAESDDecoder:
    """One loaded decoder on its device: `decode(latent [B,C,h,w]) -> image [B,3,8h,8w] in [-1, 1]`."""

    def __init__(self, module: Any, device: Any) -> None:
        self.module = module
        self.device = device
        self._on_device = True
        self._lock = threading.Lock()

    def decode(self, latent: Any) -> Any:
        import torch

        with self._lock:
            if not self._on_device:  # moved off by /free while still in use
                self.module.to(self.device)
                self._on_device = True
            with torch.inference_mode():
                return self.module(latent.to(device=self.device, dtype=torch.float32))

    def unload(self) -> None:
        with self._lock:
            self.module.to("cpu")
            self._on_device = False


def load_decoder_file(path: Path | str, device: Any = "cpu") -> TAESDDecoder:
    """Read and build the decoder in `path` on `device` (uncached; see `load_decoder`)."""
    import torch

    path = Path(path)
    try:
        tensors = decoder_state_dict(load_state_dict(path))
        module = build_decoder(latent_channels(tensors))
    except ModelFileError as err:
        raise ModelFileError(f"{path.name}: {err}") from err
    result = module.load_state_dict(tensors, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelFileError(f"{path.name} is not a TAESD decoder: missing {result.missing_keys[:4]}, "
                             f"unexpected {result.unexpected_keys[:4]}")
    module.to(device=torch.device(device), dtype=torch.float32).eval().requires_grad_(False)
    return TAESDDecoder(module, torch.device(device))


def load_decoder(path: Path | str, device: Any = "cpu") -> TAESDDecoder:
    """The decoder in `path` on `device`, loaded once per file version and device."""
    from comfyserve.models.cache import MODELS

    return MODELS.get("taesd_decoder", path, lambda: load_decoder_file(path, device), str(device))
