"""extra_model_paths.yaml in ComfyUI's format → directories added to the model folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyserve.config import Settings
from comfyserve.extra_model_paths import ExtraModelPathsError, load_extra_model_paths
from comfyserve.paths import Folders

CONFIG = """
a111:
    base_path: webui
    checkpoints: models/Stable-diffusion
    loras: |
        models/Lora
        models/LyCORIS
    unet: models/unet
    vae: /abs/vae
comfy_first:
    base_path: ~/comfy
    is_default: true
    clip: models/clip
empty:
"""


def test_sections_paths_and_legacy_names(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = tmp_path / "cfg" / "extra.yaml"
    config.parent.mkdir()
    config.write_text(CONFIG)
    found = load_extra_model_paths(config)
    base = tmp_path / "cfg" / "webui"
    assert found == [
        ("checkpoints", base / "models/Stable-diffusion", False),
        ("loras", base / "models/Lora", False),
        ("loras", base / "models/LyCORIS", False),
        ("unet", base / "models/unet", False),
        ("vae", Path("/abs/vae"), False),
        ("clip", tmp_path / "home" / "comfy" / "models/clip", True),
    ]

    folders = Folders.from_settings(Settings(base_directory=tmp_path / "base", extra_model_paths_config=[config]))
    assert folders.model_folder("checkpoints").paths[-1] == base / "models/Stable-diffusion"
    assert folders.model_folder("diffusion_models").paths[-1] == base / "models/unet"
    # is_default puts the directory first.
    assert folders.model_folder("text_encoders").paths[0] == tmp_path / "home" / "comfy" / "models/clip"


def test_files_in_an_extra_directory_are_listed(tmp_path):
    extra = tmp_path / "elsewhere"
    (extra / "ckpts").mkdir(parents=True)
    (extra / "ckpts" / "model.safetensors").write_bytes(b"x")
    config = tmp_path / "extra.yaml"
    config.write_text(f"mine:\n    base_path: {extra}\n    checkpoints: ckpts\n")
    folders = Folders.from_settings(Settings(base_directory=tmp_path / "base", extra_model_paths_config=[config]))
    assert folders.filename_list("checkpoints") == ["model.safetensors"]
    assert folders.full_path("checkpoints", "model.safetensors") == extra / "ckpts" / "model.safetensors"


@pytest.mark.parametrize("text", ["- a\n- b\n", "x: [1, 2]\n", "a: b: c\n"])
def test_malformed_files_are_reported(tmp_path, text):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ExtraModelPathsError):
        load_extra_model_paths(config)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ExtraModelPathsError, match="cannot read"):
        load_extra_model_paths(tmp_path / "nope.yaml")
