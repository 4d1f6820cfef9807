"""Flags that change what a real server process does: extra model paths, quick test, warnings."""

from __future__ import annotations

import subprocess
import sys

from tests.api.client import get
from tests.serverproc import REPO


def test_extra_model_paths_config_lists_models_from_elsewhere(make_server, tmp_path):
    elsewhere = tmp_path / "webui"
    (elsewhere / "models" / "Stable-diffusion").mkdir(parents=True)
    (elsewhere / "models" / "Stable-diffusion" / "far.safetensors").write_bytes(b"{}")
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(f"a111:\n    base_path: {elsewhere}\n    checkpoints: models/Stable-diffusion\n")
    srv = make_server("--extra-model-paths-config", str(config), "--fast")
    assert get(srv.url, "/models/checkpoints").json() == ["far.safetensors"]
    assert "--fast is accepted for ComfyUI compatibility but has no effect yet" in srv.log()


def test_quick_test_for_ci_starts_then_exits_cleanly(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "comfyserve", "--quick-test-for-ci", "--port", "0", "--base-directory", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "start-up complete" in done.stderr
    assert (tmp_path / "user" / "comfyserve.sqlite3").exists()


def test_a_second_server_on_the_same_base_directory_stops_with_a_clear_error(make_server, tmp_path):
    first = make_server(base=tmp_path / "shared")
    done = subprocess.run(
        [sys.executable, "-m", "comfyserve", "--port", "0", "--base-directory", str(first.base)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1
    assert "in use by another comfyserve process" in done.stderr
    assert get(first.url, "/prompt").status == 200  # the first one is unharmed
