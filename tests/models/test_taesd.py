"""TAESD decoders: the original file layout onto diffusers' DecoderTiny, compared to a plain
reference network, the scale the previewer feeds it, caching, and TAESD preview frames through a
real server."""

from __future__ import annotations

import io
import os
import struct
import uuid

import pytest
import torch
from PIL import Image, ImageOps

from comfyserve.models.files import ModelFileError
from comfyserve.models.taesd import build_decoder, decoder_state_dict, load_decoder, load_decoder_file
from tests.api.client import WsClient, post
from tests.api.workflows import sd_txt2img
from tests.models.golden_checkpoint import link_into
from tests.models.taesd_reference import constant_colour_decoder, random_decoder, write_decoder
from tests.serverproc import ServerProcess


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_file_layout_maps_onto_decoder_tiny_exactly(tmp_path, suffix):
    network = random_decoder(seed=3)
    path = write_decoder(tmp_path / f"taesd_decoder{suffix}", network)
    from comfyserve.models.files import load_state_dict

    original = load_state_dict(path)
    assert "1.weight" in original and "3.conv.0.weight" in original and "19.bias" in original
    converted = decoder_state_dict(original)
    result = build_decoder(4).load_state_dict(converted, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert len(converted) == len(original)


def test_decoder_matches_the_reference_network(tmp_path):
    network = random_decoder(seed=4)
    decoder = load_decoder_file(write_decoder(tmp_path / "taesd_decoder.pth", network))
    latent = 2.0 * torch.randn(2, 4, 6, 5, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = network(latent)  # about [0, 1]
    got = decoder.decode(latent)
    assert got.shape == (2, 3, 48, 40)
    # Ours gives the same image in [-1, 1].
    torch.testing.assert_close(got, expected * 2 - 1, rtol=1e-5, atol=1e-5)
    # The clamp is part of it: a huge latent saturates rather than blowing up.
    huge = decoder.decode(latent * 1000)
    torch.testing.assert_close(huge, network(latent * 1000).detach() * 2 - 1, rtol=1e-5, atol=1e-5)


def test_diffusers_layout_loads_too(tmp_path):
    network = random_decoder(seed=6)
    diffusers_keys = {"decoder." + k: v for k, v in decoder_state_dict(network.state_dict()).items()}
    from safetensors.torch import save_file

    path = tmp_path / "taesd_decoder.safetensors"
    save_file({k: v.contiguous() for k, v in diffusers_keys.items()}, str(path))
    latent = torch.randn(1, 4, 4, 4)
    torch.testing.assert_close(load_decoder_file(path).decode(latent), network(latent).detach() * 2 - 1,
                               rtol=1e-5, atol=1e-5)


def test_not_a_decoder_fails_naming_the_file(tmp_path):
    encoder_like = tmp_path / "taesd_encoder.pth"
    torch.save({"0.weight": torch.zeros(64, 3, 3, 3), "0.bias": torch.zeros(64)}, str(encoder_like))
    with pytest.raises(ModelFileError, match="taesd_encoder.pth"):
        load_decoder_file(encoder_like)
    partial = tmp_path / "taesd_decoder_partial.pth"
    state = random_decoder().state_dict()
    del state["19.bias"]
    torch.save(state, str(partial))
    with pytest.raises(ModelFileError, match="missing"):
        load_decoder_file(partial)


def test_loaded_once_per_file_version_and_unload_keeps_it_usable(tmp_path):
    path = write_decoder(tmp_path / "taesd_decoder.pth", random_decoder(seed=7))
    first = load_decoder(path, "cpu")
    assert load_decoder(path, "cpu") is first
    latent = torch.randn(1, 4, 3, 3)
    before = first.decode(latent)
    first.unload()  # what /free does to live models
    torch.testing.assert_close(first.decode(latent), before)
    write_decoder(path, random_decoder(seed=8))
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = load_decoder(path, "cpu")
    assert second is not first
    assert not torch.allclose(second.decode(latent), before)


# -- through a real server ------------------------------------------------------------------------
COLOUR = (1.0, 0.0, 0.5)  # the decoder's raw output: R full, G none, B half
EXPECTED_RGB = (255, 0, 127)  # after [0,1] → [-1,1] → ComfyUI's preview conversion


@pytest.fixture(scope="module")
def taesd_server(tmp_path_factory, sd15_mini_checkpoint):
    base = tmp_path_factory.mktemp("taesd")
    link_into(sd15_mini_checkpoint, base / "models" / "checkpoints")
    write_decoder(base / "models" / "vae_approx" / "taesd_decoder.pth", constant_colour_decoder(COLOUR))
    server = ServerProcess(base).start()
    yield server
    server.stop()


def preview_images(server, prompt, extra_data):
    client = WsClient(server.ws_url, uuid.uuid4().hex)
    client.recv()
    body = {"prompt": prompt, "client_id": client.client_id, "extra_data": extra_data}
    prompt_id = post(server.url, "/prompt", body).json()["prompt_id"]
    frames = client.until_done(prompt_id, timeout=240)
    client.close()
    assert any(isinstance(f, dict) and f["type"] == "executed" and f["data"]["node"] == "7" for f in frames)
    images = []
    for frame in (f for f in frames if isinstance(f, bytes)):
        assert struct.unpack(">II", frame[:8]) == (1, 1)  # preview, JPEG
        with Image.open(io.BytesIO(frame[8:])) as picture:
            assert picture.format == "JPEG"
            images.append(picture.convert("RGB"))
    return images


def is_colour(picture: Image.Image, rgb: tuple[int, int, int], tolerance: int = 4) -> bool:
    low, high = zip(*picture.getextrema(), strict=True)
    return all(abs(lo - c) <= tolerance and abs(hi - c) <= tolerance for lo, hi, c in zip(low, high, rgb, strict=True))


def test_taesd_preview_frames_come_from_the_decoder_file(taesd_server):
    images = preview_images(taesd_server, sd_txt2img(96, 64), {"preview_method": "taesd"})
    assert len(images) == 2  # one per step
    # A 96×64 image: 12×8 latent → 96×64 decoded → enlarged to fit the 512 preview size.
    expected_size = ImageOps.contain(Image.new("RGB", (96, 64)), (512, 512)).size
    assert expected_size == (512, 341)
    for picture in images:
        assert picture.size == expected_size
        assert is_colour(picture, EXPECTED_RGB)


def test_auto_is_latent2rgb_even_with_the_decoder_present(taesd_server):
    images = preview_images(taesd_server, sd_txt2img(64, 64), {"preview_method": "auto"})
    assert len(images) == 2
    for picture in images:
        assert picture.size == (512, 512)
        assert not is_colour(picture, EXPECTED_RGB, tolerance=40)
