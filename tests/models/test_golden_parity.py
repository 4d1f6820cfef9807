"""Every public golden case of ../shared/golden (copied to tests/golden) through a real server:
the workflow ComfyUI 0.8 ran is posted as is, and each PNG and SaveLatent file it wrote is
compared with ComfyUI's at RECIPE.md's pass thresholds (index.json `tolerances`).

`vae_roundtrip` also has its own strict test (test_golden_vae_roundtrip.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file

from tests.api.client import post, wait_history
from tests.models.compare import PASS, image_diff, latent_diff
from tests.models.golden_checkpoint import link_into
from tests.serverproc import ServerProcess

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
INDEX = json.loads((GOLDEN / "index.json").read_text())
CASES = {case["name"]: case for case in INDEX["cases"]}
# dpm_adaptive ignores `steps` and takes ~40 s on this machine (ComfyUI too); still run.
SLOW = {"sampler_dpm_adaptive": 600}


@pytest.fixture(scope="module")
def golden_server(tmp_path_factory, sd15_mini_checkpoint, lora_mini_file):
    base = tmp_path_factory.mktemp("golden")
    link_into(sd15_mini_checkpoint, base / "models" / "checkpoints")
    link_into(lora_mini_file, base / "models" / "loras")
    (base / "input").mkdir(parents=True)
    for image in (GOLDEN / "inputs").iterdir():
        shutil.copy(image, base / "input" / image.name)
    server = ServerProcess(base).start()
    yield server
    server.stop()


def run_case(server: ServerProcess, case: dict) -> Path:
    workflow = json.loads((GOLDEN / case["workflow"]).read_text())
    body = {"prompt": workflow}
    if case.get("extra_data"):
        body["extra_data"] = case["extra_data"]
    reply = post(server.url, "/prompt", body)
    assert reply.status == 200, reply.body
    entry = wait_history(server.url, reply.json()["prompt_id"], timeout=SLOW.get(case["name"], 240))
    assert entry["status"]["status_str"] == "success", entry["status"]["messages"][-1]
    return server.base / "output" / "quad_public" / case["name"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_matches_comfyui(golden_server, name):
    case = CASES[name]
    produced = run_case(golden_server, case)
    report = []
    for files in case["latents"].values():
        for item in files:
            ours = load_file(str(produced / Path(item["latent"]).name))["latent_tensor"]
            diff = latent_diff(ours, np.load(GOLDEN / item["npy"]))
            report.append((item["npy"], diff))
            assert diff.ok(PASS), (item["npy"], diff)
    for files in case["images"].values():
        for path in files:
            with Image.open(produced / Path(path).name) as ours, Image.open(GOLDEN / path) as golden:
                diff = image_diff(np.array(ours.convert("RGB")), np.array(golden.convert("RGB")))
            report.append((path, diff))
            assert diff.ok(PASS), (path, diff)
    print(name, report)
