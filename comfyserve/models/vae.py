"""The checkpoint's first-stage autoencoder as a diffusers `AutoencoderKL`, used ComfyUI's way.

`VAE.decode(samples)` takes latents in raw VAE space (what LATENT holds; not multiplied by the
model's scale factor) `[B, 4, h, w]` and returns an IMAGE `[B, 8h, 8w, 3]`, float32 in 0..1:
post_quant_conv → decoder → `clamp((x + 1) / 2, 0, 1)`, channels last. `VAE.encode(pixels)`
takes an IMAGE, crops it to a multiple of 8 on each side (centred: the odd pixels are cut
evenly, the extra one at the far edge, as ComfyUI's `vae_encode_crop_pixels`), keeps the first
3 channels, maps 0..1 to -1..1, runs encoder → quant_conv and returns the mean of the latent
distribution (ComfyUI's regulariser uses the mode, not a sample; the `vae_roundtrip` golden
agrees to float precision).

Both work in batches sized to the free memory (ComfyUI's estimate per pixel) and fall back to
tiles when the device runs out of memory. The tiled paths are ComfyUI's: three passes with
different tile shapes (w×h, w/2×2h, 2w×h/2), each tile blended with a linear feather over the
overlap, averaged. `decode_tiled` takes latent-sized tiles, `encode_tiled` pixel-sized ones.
Before any of them runs, the memory manager (memory.py) puts the autoencoder on its compute
device, making room for one image's activations; results go to the intermediate device.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch

from comfyserve.models import devices, memory
from comfyserve.models.detect import VAEConfig
from comfyserve.models.unet import ModelLoadError, load_weights

log = logging.getLogger(__name__)

# ComfyUI's working-memory estimates for the SD autoencoder (bytes per latent / pixel element).
DECODE_BYTES_PER_LATENT_PIXEL = 2178 * 64
ENCODE_BYTES_PER_PIXEL = 1767


def diffusers_vae_config(vae: VAEConfig, scaling_factor: float = 0.18215) -> dict[str, Any]:
    from diffusers.loaders.single_file_utils import create_vae_diffusers_config_from_ldm

    ddconfig = {
        "ch": vae.ch, "ch_mult": list(vae.ch_mult), "num_res_blocks": vae.num_res_blocks,
        "z_channels": vae.z_channels, "in_channels": vae.in_channels, "out_ch": vae.out_ch,
        "double_z": vae.double_z,
    }
    original = {"model": {"params": {"first_stage_config": {"params": {"ddconfig": ddconfig, "embed_dim": vae.embed_dim}}}}}
    config = create_vae_diffusers_config_from_ldm(original, {}, scaling_factor=scaling_factor)
    if vae.embed_dim != vae.z_channels:
        raise ModelLoadError(f"VAEs with embed_dim {vae.embed_dim} != z_channels {vae.z_channels} are not supported")
    config["mid_block_add_attention"] = vae.mid_attention
    config["norm_num_groups"] = 32
    config.pop("sample_size", None)
    return config


def convert_vae_state_dict(state_dict: Mapping[str, Any], config: dict[str, Any], prefix: str) -> tuple[dict[str, Any], list[str]]:
    """(diffusers weights, LDM keys the conversion left out) for the VAE tensors under `prefix`."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    source = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    converted = {k: v for k, v in convert_ldm_vae_checkpoint(source, config).items() if v is not None}
    # Attention weights become views of the file's 1x1 convs: match by storage, not identity.
    used = {v.data_ptr() for v in converted.values()}
    leftover = sorted(k for k, v in source.items() if v.data_ptr() not in used)
    return converted, leftover


def load_autoencoder(state_dict: Mapping[str, Any], vae: VAEConfig, name: str, prefix: str,
                     dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Any:
    from diffusers import AutoencoderKL

    config = diffusers_vae_config(vae)
    converted, leftover = convert_vae_state_dict(state_dict, config, prefix)
    if leftover:
        log.debug("%s: left over VAE keys %s", name, leftover)
    with torch.device("meta"):
        model = AutoencoderKL(**config)
    load_weights(model, converted, name, "VAE", dtype, device)
    return model


# -- tiling ----------------------------------------------------------------------------------
def tiled_steps(width: int, height: int, tile_x: int, tile_y: int, overlap: int) -> int:
    rows = 1 if height <= tile_y else -(-(height - overlap) // (tile_y - overlap))
    cols = 1 if width <= tile_x else -(-(width - overlap) // (tile_x - overlap))
    return rows * cols


def tiled_map(samples: torch.Tensor, function: Callable[[torch.Tensor], torch.Tensor], tile: tuple[int, int],
              overlap: int, scale: float, out_channels: int, output_device: torch.device | str = "cpu",
              progress: Callable[[], None] | None = None) -> torch.Tensor:
    """Apply `function` (which scales H and W by `scale`) tile by tile over `samples` [B,C,H,W]
    with `tile = (tile_h, tile_w)`, blending overlapping tiles with a linear feather."""
    height, width = samples.shape[2], samples.shape[3]
    sizes = (height, width)
    out_size = [round(s * scale) for s in sizes]
    output = torch.empty([samples.shape[0], out_channels, *out_size], device=output_device)
    for b in range(samples.shape[0]):
        item = samples[b:b + 1]
        if all(sizes[d] <= tile[d] for d in range(2)):
            output[b:b + 1] = function(item.contiguous()).to(output_device)
            if progress:
                progress()
            continue
        acc = torch.zeros([1, out_channels, *out_size], device=output_device)
        weight = torch.zeros([1, out_channels, *out_size], device=output_device)
        starts = [range(0, sizes[d] - overlap, tile[d] - overlap) if sizes[d] > tile[d] else [0] for d in range(2)]
        for corner in itertools.product(*starts):
            piece = item
            placed = []
            for d in range(2):
                pos = max(0, min(sizes[d] - overlap, corner[d]))
                length = min(tile[d], sizes[d] - pos)
                piece = piece.narrow(d + 2, pos, length)
                placed.append(round(pos * scale))
            result = function(piece.contiguous()).to(output_device)
            mask = torch.ones_like(result)
            feather = round(overlap * scale)
            for d in (2, 3):
                if feather >= mask.shape[d]:
                    continue
                for t in range(feather):
                    ramp = (t + 1) / feather
                    mask.narrow(d, t, 1).mul_(ramp)
                    mask.narrow(d, mask.shape[d] - 1 - t, 1).mul_(ramp)
            target = acc.narrow(2, placed[0], mask.shape[2]).narrow(3, placed[1], mask.shape[3])
            target_weight = weight.narrow(2, placed[0], mask.shape[2]).narrow(3, placed[1], mask.shape[3])
            target.add_(result * mask)
            target_weight.add_(mask)
            if progress:
                progress()
        output[b:b + 1] = acc / weight
    return output



def _free_memory(device: torch.device) -> int:
    try:
        return int(devices.free_memory(device))
    except Exception:
        return 1 << 30


# -- the VAE value ----------------------------------------------------------------------------
class VAE:
    """ComfyUI's VAE object: `decode`, `encode`, their tiled variants, and the ratios nodes use."""

    downscale_ratio = 8
    upscale_ratio = 8
    latent_channels = 4
    output_channels = 3

    def __init__(self, autoencoder: Any, config: VAEConfig | None = None, name: str = "",
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        self.autoencoder = autoencoder
        self.config = config
        self.name = name
        self.dtype = dtype
        self.device = torch.device(device)
        self.output_device = devices.policy().intermediate_device
        if config is not None:
            self.downscale_ratio = self.upscale_ratio = config.downscale
            self.latent_channels = config.z_channels

    # -- ComfyUI's helpers ----------------------------------------------------------------------
    def spacial_compression_decode(self) -> int:
        return self.upscale_ratio

    def spacial_compression_encode(self) -> int:
        return self.downscale_ratio

    def temporal_compression_decode(self) -> None:
        return None

    def temporal_compression_encode(self) -> None:
        return None

    def throw_exception_if_invalid(self) -> None:
        if self.autoencoder is None:
            raise RuntimeError(
                "ERROR: VAE is invalid: None\n\nIf the VAE is from a checkpoint loader node your checkpoint "
                "does not contain a valid VAE.")

    def to(self, device: torch.device | str) -> VAE:
        self.device = torch.device(device)
        if self.autoencoder is not None:
            self.autoencoder.to(self.device)
        return self

    @staticmethod
    def process_input(image: torch.Tensor) -> torch.Tensor:
        return image * 2.0 - 1.0

    @staticmethod
    def process_output(image: torch.Tensor) -> torch.Tensor:
        return image.add_(1.0).div_(2.0).clamp_(0.0, 1.0)

    def crop_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Crop [B,H,W,C] to whole latent pixels (centred) and to the VAE's channel count."""
        ratio = self.downscale_ratio
        for dim in (1, 2):
            size = pixels.shape[dim]
            keep = (size // ratio) * ratio
            if keep != size:
                pixels = pixels.narrow(dim, (size % ratio) // 2, keep)
        if pixels.shape[-1] > self.output_channels:
            pixels = pixels[..., : self.output_channels]
        return pixels

    # -- the raw model ---------------------------------------------------------------------------
    def _decode_raw(self, samples: torch.Tensor) -> torch.Tensor:
        """Latents [B,4,h,w] → decoder output [B,3,8h,8w] in about -1..1 (float32, output device)."""
        model = self.autoencoder
        with torch.no_grad():
            z = samples.to(device=self.device, dtype=self.dtype)
            return model.decoder(model.post_quant_conv(z)).to(self.output_device).float()

    def _encode_raw(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels [B,3,H,W] in -1..1 → the latent distribution's mean [B,4,H/8,W/8]."""
        model = self.autoencoder
        with torch.no_grad():
            x = pixels.to(device=self.device, dtype=self.dtype)
            moments = model.quant_conv(model.encoder(x))
            mean = moments[:, : moments.shape[1] // 2] if self.config is None or self.config.double_z else moments
            return mean.to(self.output_device).float()

    def _batch_size(self, bytes_per_item: float) -> int:
        return max(1, int(_free_memory(self.device) / max(1.0, bytes_per_item)))

    # -- public API ------------------------------------------------------------------------------
    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        """LATENT samples → IMAGE [B,H,W,3] in 0..1 (tiles if the device runs out of memory)."""
        self.throw_exception_if_invalid()
        if samples.ndim == 5:
            samples = samples[:, :, 0]
        need = DECODE_BYTES_PER_LATENT_PIXEL * samples.shape[2] * samples.shape[3] * self._dtype_size()
        self._load(need)
        out = None
        try:
            batch = self._batch_size(need)
            for start in range(0, samples.shape[0], batch):
                part = self.process_output(self._decode_raw(samples[start:start + batch]))
                if out is None:
                    out = torch.empty((samples.shape[0], *part.shape[1:]), device=self.output_device)
                out[start:start + batch] = part
        except Exception as err:
            if not memory.is_oom(err):
                raise
            log.warning("Warning: Ran out of memory when regular VAE decoding, retrying with tiled VAE decoding.")
            out = None
        if out is None:
            _empty_cache()
            out = self._decode_tiled_raw(samples)
        return out.movedim(1, -1)

    def decode_tiled(self, samples: torch.Tensor, tile_x: int = 64, tile_y: int = 64, overlap: int = 16,
                     tile_t: int | None = None, overlap_t: int | None = None) -> torch.Tensor:
        """Decode in latent-sized tiles (ComfyUI's defaults: 64×64 latents, 16 overlap)."""
        self.throw_exception_if_invalid()
        if samples.ndim == 5:
            samples = samples[:, :, 0]
        self._load(DECODE_BYTES_PER_LATENT_PIXEL * tile_x * tile_y * self._dtype_size())
        return self._decode_tiled_raw(samples, tile_x, tile_y, overlap).movedim(1, -1)

    def _decode_tiled_raw(self, samples: torch.Tensor, tile_x: int = 64, tile_y: int = 64, overlap: int = 16) -> torch.Tensor:
        scale, channels = self.upscale_ratio, self.output_channels
        passes = ((tile_x // 2, tile_y * 2), (tile_x * 2, tile_y // 2), (tile_x, tile_y))
        total = sum(tiled_map(samples, self._decode_raw, (ty, tx), overlap, scale, channels, self.output_device)
                    for tx, ty in passes)
        return self.process_output(total / 3.0)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """IMAGE [B,H,W,C] in 0..1 → LATENT samples [B,4,H/8,W/8] (tiles if out of memory)."""
        self.throw_exception_if_invalid()
        pixels = self.crop_pixels(pixels).movedim(-1, 1)
        need = ENCODE_BYTES_PER_PIXEL * pixels.shape[2] * pixels.shape[3] * self._dtype_size()
        self._load(need)
        out = None
        try:
            batch = self._batch_size(need)
            for start in range(0, pixels.shape[0], batch):
                part = self._encode_raw(self.process_input(pixels[start:start + batch]))
                if out is None:
                    out = torch.empty((pixels.shape[0], *part.shape[1:]), device=self.output_device)
                out[start:start + batch] = part
        except Exception as err:
            if not memory.is_oom(err):
                raise
            log.warning("Warning: Ran out of memory when regular VAE encoding, retrying with tiled VAE encoding.")
            out = None
        if out is None:
            _empty_cache()
            out = self._encode_tiled_raw(pixels)
        return out

    def encode_tiled(self, pixels: torch.Tensor, tile_x: int = 512, tile_y: int = 512, overlap: int = 64,
                     tile_t: int | None = None, overlap_t: int | None = None) -> torch.Tensor:
        """Encode in pixel-sized tiles (ComfyUI's defaults: 512×512, 64 overlap)."""
        self.throw_exception_if_invalid()
        pixels = self.crop_pixels(pixels).movedim(-1, 1)
        self._load(ENCODE_BYTES_PER_PIXEL * tile_x * tile_y * self._dtype_size())
        return self._encode_tiled_raw(pixels, tile_x, tile_y, overlap)

    def _encode_tiled_raw(self, pixels: torch.Tensor, tile_x: int = 512, tile_y: int = 512, overlap: int = 64) -> torch.Tensor:
        def encode(part: torch.Tensor) -> torch.Tensor:
            return self._encode_raw(self.process_input(part))

        scale, channels = 1.0 / self.downscale_ratio, self.latent_channels
        passes = ((tile_x, tile_y), (tile_x * 2, tile_y // 2), (tile_x // 2, tile_y * 2))
        total = None
        for tx, ty in passes:
            part = tiled_map(pixels, encode, (ty, tx), overlap, scale, channels, self.output_device)
            total = part if total is None else total + part
        return total / 3.0

    def _load(self, memory_required: int) -> None:
        """Onto the compute device before running (room made for `memory_required` bytes of
        activations for one image; the batch size then follows the memory that is left)."""
        memory.load_models([self], memory_required)

    def _dtype_size(self) -> int:
        return devices.dtype_size(self.dtype)


class PixelSpaceVAE(VAE):
    """ComfyUI's "pixel_space" VAE: images pass through unchanged (as -1..1 "latents", channels first)."""

    downscale_ratio = 1
    upscale_ratio = 1
    latent_channels = 3

    def __init__(self) -> None:
        super().__init__(autoencoder=None, name="pixel_space")
        self.autoencoder = _Identity()

    def _decode_raw(self, samples: torch.Tensor) -> torch.Tensor:
        return samples.to(self.output_device).float().clone()

    def _encode_raw(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.to(self.output_device).float()


class _Identity:
    def to(self, *_: Any) -> _Identity:
        return self


def _empty_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_vae(state_dict: Mapping[str, Any], config: VAEConfig, name: str, prefix: str,
             dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> VAE:
    return VAE(load_autoencoder(state_dict, config, name, prefix, dtype, device), config, name, dtype, device)
