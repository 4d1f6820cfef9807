"""Latent previews: off unless asked for; latent2rgb with ComfyUI's factors, as a JPEG enlarged
to the preview size."""

from __future__ import annotations

import io

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
