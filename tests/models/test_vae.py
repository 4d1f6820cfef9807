"""The VAE: LDM keys → AutoencoderKL with nothing left over, ComfyUI's crop, value ranges,
batching, the tiled paths (placement and feathering) and the out-of-memory fallback."""

from __future__ import annotations

import pytest
import torch

from comfyserve.models import vae as vae_module
from comfyserve.models.detect import detect_vae
from comfyserve.models.unet import ModelLoadError
from comfyserve.models.vae import (
    PixelSpaceVAE,
    convert_vae_state_dict,
    diffusers_vae_config,
    load_vae,
    tiled_map,
)
from tests.models import ldm_layout as L


@pytest.fixture(scope="module")
def tiny_vae():
    sd = L.fill(L.vae_shapes(), seed=2)
    config = detect_vae(sd, "first_stage_model.")
    return sd, config, load_vae(sd, config, "tiny-vae", "first_stage_model.")


def test_conversion_leaves_nothing_over(tiny_vae):
    sd, config, vae = tiny_vae
    converted, leftover = convert_vae_state_dict(sd, diffusers_vae_config(config), "first_stage_model.")
    assert leftover == []
    assert set(converted) == set(vae.autoencoder.state_dict())
    assert vae.downscale_ratio == 2 and vae.latent_channels == 4


def test_a_missing_vae_key_fails_naming_the_file():
    sd = L.fill(L.vae_shapes(), seed=2)
    del sd["first_stage_model.decoder.up.0.block.1.conv2.bias"]
    config = detect_vae(sd, "first_stage_model.")
    with pytest.raises(ModelLoadError, match="broken.ckpt.*VAE.*1 missing"):
        load_vae(sd, config, "broken.ckpt", "first_stage_model.")


def test_decode_and_encode_shapes_and_ranges(tiny_vae):
    _, _, vae = tiny_vae
    latent = torch.randn(3, 4, 5, 6)
    image = vae.decode(latent)
    assert image.shape == (3, 10, 12, 3) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1
    encoded = vae.encode(image)
    assert encoded.shape == (3, 4, 5, 6)
    assert torch.isfinite(encoded).all()


def test_encode_crops_like_comfyui(tiny_vae):
    _, _, vae = tiny_vae
    pixels = torch.rand(1, 11, 9, 4)  # RGBA, odd sizes: crop to 10x8, offsets (0, 0) for ratio 2
    cropped = vae.crop_pixels(pixels)
    assert cropped.shape == (1, 10, 8, 3)
    assert torch.equal(cropped, pixels[:, 0:10, 0:8, :3])
    vae8 = PixelSpaceVAE()
    vae8.downscale_ratio = 8
    wide = torch.rand(1, 21, 70, 3)  # 21 → 16 starting at 2; 70 → 64 starting at 3
    assert torch.equal(vae8.crop_pixels(wide), wide[:, 2:18, 3:67])
    assert torch.allclose(vae.encode(pixels), vae.encode(pixels[:, :10, :8, :3]))


def test_batches_do_not_change_results(tiny_vae, monkeypatch):
    _, _, vae = tiny_vae
    latent = torch.randn(3, 4, 4, 4)
    whole = vae.decode(latent)
    monkeypatch.setattr(vae_module, "_free_memory", lambda device: 1)  # one item per batch
    assert torch.allclose(vae.decode(latent), whole, atol=1e-5)


def test_tiled_map_places_and_blends_exactly():
    # A function that only scales: tiles blended with any feather give back the untiled result.
    samples = torch.randn(2, 4, 37, 29)

    def upscale(x):
        return torch.nn.functional.interpolate(x, scale_factor=8, mode="nearest")[:, :3]

    tiled = tiled_map(samples, upscale, (16, 12), overlap=4, scale=8, out_channels=3)
    assert torch.allclose(tiled, upscale(samples), atol=1e-5)

    def downscale(x):
        return torch.nn.functional.avg_pool2d(x, 8)

    pixels = torch.randn(1, 4, 96, 160)
    tiled = tiled_map(pixels, downscale, (64, 64), overlap=32, scale=1 / 8, out_channels=4)
    assert torch.allclose(tiled, downscale(pixels), atol=1e-5)


def test_tiled_decode_is_three_passes_averaged(tiny_vae, monkeypatch):
    _, _, vae = tiny_vae
    calls = []
    monkeypatch.setattr(vae_module, "tiled_map", lambda samples, fn, tile, overlap, scale, ch, dev: calls.append((tile, overlap, scale)) or torch.zeros(1, 3, 8, 8))
    vae.decode_tiled(torch.zeros(1, 4, 4, 4), tile_x=8, tile_y=6, overlap=2)
    assert calls == [((12, 4), 2, 2), ((3, 16), 2, 2), ((6, 8), 2, 2)]
    calls.clear()
    vae.encode_tiled(torch.zeros(1, 8, 8, 3), tile_x=64, tile_y=32, overlap=8)
    assert calls == [((32, 64), 8, 0.5), ((16, 128), 8, 0.5), ((64, 32), 8, 0.5)]


def test_out_of_memory_falls_back_to_tiles(tiny_vae, monkeypatch):
    _, _, vae = tiny_vae
    real_raw, real_tiled = type(vae)._decode_raw, type(vae)._decode_tiled_raw
    tiled_calls = []

    def picky(self, samples):
        if samples.shape[-1] * samples.shape[-2] > 8 * 8:  # "too big" for the device
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return real_raw(self, samples)

    def small_tiles(self, samples, *args):
        tiled_calls.append(args)  # ComfyUI's fallback uses the defaults (64x64 latents, overlap 16)
        return real_tiled(self, samples, 8, 8, 2)

    monkeypatch.setattr(type(vae), "_decode_raw", picky)
    monkeypatch.setattr(type(vae), "_decode_tiled_raw", small_tiles)
    latent = torch.randn(1, 4, 12, 12)
    image = vae.decode(latent)
    assert tiled_calls == [()]
    assert image.shape == (1, 24, 24, 3)
    assert torch.allclose(image, vae.decode_tiled(latent, 8, 8, 2), atol=1e-6)


def test_other_errors_are_not_swallowed(tiny_vae, monkeypatch):
    _, _, vae = tiny_vae
    monkeypatch.setattr(type(vae), "_decode_raw", lambda self, s: (_ for _ in ()).throw(ValueError("bad")))
    with pytest.raises(ValueError, match="bad"):
        vae.decode(torch.zeros(1, 4, 2, 2))


def test_pixel_space_vae_round_trips():
    vae = PixelSpaceVAE()
    image = torch.rand(2, 5, 7, 3)
    latent = vae.encode(image)
    assert latent.shape == (2, 3, 5, 7)
    assert torch.allclose(latent, image.movedim(-1, 1) * 2 - 1)
    assert torch.allclose(vae.decode(latent), image, atol=1e-6)
