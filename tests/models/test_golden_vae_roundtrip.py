"""The `vae_roundtrip` golden through a real server: CheckpointLoaderSimple → LoadImage →
VAEEncode (node 8) → VAEDecode → SaveImage (node 7), and VAEEncode of the decoded float image
(node 31, the decoder's fingerprint), compared with ComfyUI 0.8's files at the strict thresholds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file

from tests.api.client import post, wait_history
from tests.models.compare import STRICT, image_diff, latent_diff
from tests.models.golden_checkpoint import link_into

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
CASE = GOLDEN / "vae_roundtrip"


@pytest.fixture(scope="module")
def outputs(server, sd15_mini_checkpoint) -> Path:
    link_into(sd15_mini_checkpoint, server.base / "models" / "checkpoints")
    (server.base / "input").mkdir(parents=True, exist_ok=True)
    shutil.copy(GOLDEN / "inputs" / "gold_in_64.png", server.base / "input" / "gold_in_64.png")
    workflow = json.loads((CASE / "workflow.json").read_text())
    reply = post(server.url, "/prompt", {"prompt": workflow})
    assert reply.status == 200, reply.body
    entry = wait_history(server.url, reply.json()["prompt_id"], timeout=240)
    assert entry["status"]["status_str"] == "success", entry["status"]
    return server.base / "output" / "quad_public" / "vae_roundtrip"


@pytest.mark.parametrize("node", ["8", "31"])
def test_latents_match_comfyui(outputs, node):
    ours = load_file(str(outputs / f"n{node}_00001_.latent"))
    golden = load_file(str(CASE / f"n{node}_00001_.latent"))
    assert set(ours) == {"latent_tensor", "latent_format_version_0"} == set(golden)
    assert ours["latent_tensor"].dtype == np.float32 and ours["latent_format_version_0"].shape == (0,)
    diff = latent_diff(ours["latent_tensor"], np.load(CASE / f"n{node}_00001_.npy"))
    print(f"node {node}: rel_mean {diff.rel_mean:.2e} rel_max {diff.rel_max:.2e}")
    assert diff.ok(STRICT), diff


def test_image_matches_comfyui(outputs):
    ours = Image.open(outputs / "n7_00001_.png")
    golden = Image.open(CASE / "n7_00001_.png")
    assert ours.mode == golden.mode == "RGB" and ours.size == golden.size == (64, 64)
    diff = image_diff(np.array(ours), np.array(golden))
    print(f"image: mean {diff.mean_abs:.4f} max {diff.max_abs}")
    assert diff.ok(STRICT), diff


def test_png_prompt_text_matches_comfyui(outputs):
    # Including the LoadImage node's "is_changed": [sha256 of the input] (RECIPE.md §4).
    ours = Image.open(outputs / "n7_00001_.png")
    golden = Image.open(CASE / "n7_00001_.png")
    assert ours.text["prompt"] == golden.text["prompt"]
