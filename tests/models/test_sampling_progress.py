"""KSampler through a real server: one `progress` per step, latent previews only when a prompt
asks for them (binary type 1 JPEG frames after each progress, as ComfyUI), and an interrupt that
takes effect within one step."""

from __future__ import annotations

import io
import struct
import uuid

import pytest
from PIL import Image

from tests.api.client import WsClient, post
from tests.api.workflows import sd_txt2img
from tests.models.golden_checkpoint import link_into
from tests.serverproc import ServerProcess


@pytest.fixture(scope="module")
def sd_server(tmp_path_factory, sd15_mini_checkpoint):
    base = tmp_path_factory.mktemp("sd")
    link_into(sd15_mini_checkpoint, base / "models" / "checkpoints")
    server = ServerProcess(base).start()
    yield server
    server.stop()


def run(server, prompt, extra_data=None):
    client = WsClient(server.ws_url, uuid.uuid4().hex)
    client.recv()
    body = {"prompt": prompt, "client_id": client.client_id, "extra_data": extra_data or {}}
    prompt_id = post(server.url, "/prompt", body).json()["prompt_id"]
    frames = client.until_done(prompt_id, timeout=240)
    client.close()
    return frames


def sampler_frames(frames):
    return [f for f in frames if isinstance(f, bytes) or (f["type"] == "progress" and f["data"]["node"] == "5")]


def test_progress_per_step_and_no_previews_by_default(sd_server):
    frames = run(sd_server, sd_txt2img(steps=3, seed=1))
    steps = [(f["data"]["value"], f["data"]["max"]) for f in sampler_frames(frames)]
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert not [f for f in frames if isinstance(f, bytes)]


def test_latent2rgb_previews_follow_each_progress(sd_server):
    frames = run(sd_server, sd_txt2img(steps=3, seed=2), {"preview_method": "latent2rgb"})
    kinds = ["binary" if isinstance(f, bytes) else "progress" for f in sampler_frames(frames)]
    assert kinds == ["progress", "binary"] * 3
    for frame in (f for f in frames if isinstance(f, bytes)):
        assert struct.unpack(">II", frame[:8]) == (1, 1)  # preview, JPEG
        with Image.open(io.BytesIO(frame[8:])) as picture:
            assert picture.format == "JPEG" and picture.size == (512, 512)


def test_interrupt_takes_effect_within_one_step(sd_server):
    client = WsClient(sd_server.ws_url, uuid.uuid4().hex)
    client.recv()
    prompt_id = post(sd_server.url, "/prompt", {"prompt": sd_txt2img(steps=60, seed=3),
                                                "client_id": client.client_id}).json()["prompt_id"]
    client.until(lambda f: isinstance(f, dict) and f["type"] == "progress", timeout=240)
    assert post(sd_server.url, "/interrupt", {"prompt_id": prompt_id}).status == 200
    rest = client.until_done(prompt_id, timeout=240)
    client.close()
    after = [f for f in rest if isinstance(f, dict) and f["type"] == "progress"]
    assert len(after) <= 2  # the step running when the interrupt came, at most one more
    interrupted = next(f["data"] for f in rest if isinstance(f, dict) and f["type"] == "execution_interrupted")
    assert interrupted["node_type"] == "KSampler" and interrupted["node_id"] == "5"
