"""Latent previews: off unless asked for; latent2rgb with ComfyUI's factors, as a JPEG enlarged
to the preview size."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from comfyserve.engine import previews
from comfyserve.sampling.latent_preview import latent_to_rgb, make_previewer


@pytest.fixture(autouse=True)
def restore():
    yield
    previews.configure("none")
    previews.set_prompt_method(None)


def test_no_previews_unless_asked():
    previews.configure("none")
    previews.set_prompt_method(None)
    assert make_previewer("sd1") is None
    previews.set_prompt_method("latent2rgb")
    assert make_previewer("sd1") is not None
    previews.set_prompt_method("default")  # the server's choice
    assert make_previewer("sd1") is None
    previews.configure("latent2rgb")
    assert make_previewer("sd1") is not None


def test_latent2rgb_projection():
    latent = torch.zeros(2, 4, 2, 3)
    latent[0, 0] = 1.0  # channel 0 only: RGB = factors of channel 0 = (0.3512, 0.2297, 0.3227)
    rgb = latent_to_rgb(latent, "sd1")
    assert rgb.shape == (2, 3, 3) and rgb.dtype == torch.uint8
    expected = [int((1 + f) / 2 * 255) for f in (0.3512, 0.2297, 0.3227)]
    assert rgb[0, 0].tolist() == expected
    # SDXL adds its bias: an all-zero latent is not mid-grey.
    assert latent_to_rgb(torch.zeros(1, 4, 1, 1), "sdxl")[0, 0].tolist() == [
        int((1 + b) / 2 * 255) for b in (0.1084, -0.0175, -0.0011)]


def test_preview_is_a_jpeg_of_the_preview_size():
    previews.configure("latent2rgb", max_size=512)
    media_type, data = make_previewer("sd1")(torch.randn(1, 4, 8, 8))
    assert media_type == "image/jpeg"
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.format == "JPEG" and picture.size == (512, 512)


# -- TAESD ----------------------------------------------------------------------------------------
@pytest.fixture
def vae_approx(tmp_path, monkeypatch):
    """A fresh base directory as the runtime's folders; returns its models/vae_approx."""
    from comfyserve import runtime
    from comfyserve.config import Settings
    from comfyserve.paths import Folders

    settings = Settings(base_directory=tmp_path, cpu=True)
    found = Folders.from_settings(settings)
    found.ensure()
    monkeypatch.setattr(runtime, "_settings", settings)
    monkeypatch.setattr(runtime, "_folders", found)
    folder = tmp_path / "models" / "vae_approx"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def decode_jpeg(preview) -> Image.Image:
    media_type, data = preview
    assert media_type == "image/jpeg"
    with Image.open(io.BytesIO(data)) as picture:
        return picture.convert("RGB")


def test_decoder_file_per_family(vae_approx):
    from comfyserve.sampling.latent_preview import taesd_decoder_path
    from tests.models.taesd_reference import random_decoder, write_decoder

    assert taesd_decoder_path("sd1") is None
    xl = write_decoder(vae_approx / "taesdxl_decoder.safetensors", random_decoder())
    assert taesd_decoder_path("sd1") is None  # taesdxl_… is not taesd_…
    assert taesd_decoder_path("sdxl") == xl and taesd_decoder_path("sdxl_refiner") == xl
    sd = write_decoder(vae_approx / "taesd_decoder.pth", random_decoder())
    assert taesd_decoder_path("sd1") == sd and taesd_decoder_path("sd2") == sd
    assert taesd_decoder_path("sdxl") == xl


def vivid_decoder(seed: int):
    """A random decoder whose output spreads over [0, 1] (default init gives a near-black image)."""
    from tests.models.taesd_reference import random_decoder

    network = random_decoder(seed=seed)
    with torch.no_grad():
        spread = network(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed))).std()
        network[19].weight.mul_(0.25 / spread)
        network[19].bias.fill_(0.5)
    return network


def reference_rgb(network, latent) -> np.ndarray:
    with torch.no_grad():
        image = network(latent[:1])[0].movedim(0, -1) * 2 - 1  # [0, 1] → [-1, 1], as the product
    return ((image + 1) / 2).clamp(0, 1).mul(255).to(torch.uint8).numpy().astype(int)


def test_taesd_preview_is_the_decoder_image_of_the_unscaled_denoised_latent(vae_approx):
    from comfyserve.models.taesd import load_decoder
    from comfyserve.sampling.latent_preview import taesd_to_rgb
    from tests.models.taesd_reference import write_decoder

    network = vivid_decoder(seed=2)
    path = write_decoder(vae_approx / "taesd_decoder.pth", network)
    x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = reference_rgb(network, x0)  # the model-space latent as it is, no scale factor
    wrong = reference_rgb(network, x0 / 0.18215)  # what unscaling to the raw VAE latent would give
    assert np.abs(expected - wrong).mean() > 20
    rgb = taesd_to_rgb(load_decoder(path), x0)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == torch.uint8
    assert np.abs(rgb.numpy().astype(int) - expected).max() <= 1  # float rounding at the cast only

    previews.configure("none", max_size=64)  # 8×8 latent → 64×64: no resizing, compare pixels
    previews.set_prompt_method("taesd")
    picture = decode_jpeg(make_previewer("sd1")(x0))
    assert picture.size == (64, 64)
    # The same JPEG as the reference image would give (the encoder is deterministic).
    reference = decode_jpeg(previews.encode_preview(("JPEG", Image.fromarray(expected.astype(np.uint8)), 64)))
    assert np.abs(np.asarray(picture).astype(int) - np.asarray(reference).astype(int)).mean() < 1


def test_auto_is_latent2rgb_and_taesd_falls_back_without_a_file(vae_approx, caplog):
    from comfyserve.sampling import latent_preview
    from tests.models.taesd_reference import constant_colour_decoder, write_decoder

    previews.configure("none", max_size=64)
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    latent2rgb = Image.fromarray(latent_to_rgb(x0, "sd1").numpy()).resize((64, 64), Image.Resampling.BILINEAR)

    previews.set_prompt_method("taesd")  # no file yet: latent2rgb, with a warning
    fallback = decode_jpeg(make_previewer("sd1")(x0))
    assert "taesd_decoder" in caplog.text
    write_decoder(vae_approx / "taesd_decoder.pth", constant_colour_decoder((0.0, 1.0, 0.0)))
    taesd = decode_jpeg(make_previewer("sd1")(x0))
    previews.set_prompt_method("auto")  # ComfyUI 0.8: auto is latent2rgb, file or not
    auto = decode_jpeg(make_previewer("sd1")(x0))

    def distance(a: Image.Image, b: Image.Image) -> float:
        return float(np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int)).mean())

    assert distance(fallback, latent2rgb) < 6 and distance(auto, latent2rgb) < 6
    green = Image.new("RGB", (64, 64), (0, 255, 0))
    assert distance(taesd, green) < 3
    assert distance(auto, green) > 50
    assert latent_preview.TAESD_DECODERS == {"sd1": "taesd_decoder", "sdxl": "taesdxl_decoder"}


def test_sdxl_previews_use_the_taesdxl_file(vae_approx):
    from tests.models.taesd_reference import constant_colour_decoder, write_decoder

    write_decoder(vae_approx / "taesd_decoder.pth", constant_colour_decoder((1.0, 0.0, 0.0)))
    write_decoder(vae_approx / "taesdxl_decoder.pth", constant_colour_decoder((0.0, 0.0, 1.0)))
    previews.configure("taesd", max_size=64)  # the server's --preview-method this time
    x0 = torch.randn(1, 4, 8, 8)
    xl = decode_jpeg(make_previewer("sdxl")(x0)).getpixel((32, 32))
    sd = decode_jpeg(make_previewer("sd1")(x0)).getpixel((32, 32))
    assert xl[2] > 250 and xl[0] < 5
    assert sd[0] > 250 and sd[2] < 5
