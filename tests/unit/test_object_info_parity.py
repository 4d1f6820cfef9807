"""Every built-in node that ComfyUI 0.8 also has describes itself in `/object_info` exactly as
ComfyUI does (object_info_full.json), field by field."""

from __future__ import annotations

import json

import pytest

import nodes
from comfyserve import runtime
from comfyserve.config import Settings
from comfyserve.engine.registry import NodeRegistry
from comfyserve.paths import Folders
from tests.conftest import reference

REFERENCE = reference("object_info_full.json")["body"]


@pytest.fixture
def ours(tmp_path, monkeypatch) -> dict:
    # A base directory like the capture's: no input files, and only the one checkpoint its README
    # names (models/checkpoints/sd15-mini.safetensors; the listing needs the name, not the weights).
    checkpoints = tmp_path / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "sd15-mini.safetensors").write_bytes(b"")
    settings = Settings(base_directory=tmp_path)
    monkeypatch.setattr(runtime, "_settings", settings)
    monkeypatch.setattr(runtime, "_folders", Folders.from_settings(settings))
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    return json.loads(json.dumps(registry.object_info()))


def test_shared_nodes_are_described_exactly_as_comfyui(ours):
    shared = sorted(set(ours) & set(REFERENCE))
    assert len(shared) >= 49
    for class_type in shared:
        assert ours[class_type] == REFERENCE[class_type], class_type


def test_nodes_comfyui_lacks_are_only_the_default_custom_node():
    assert set(nodes.NODE_CLASS_MAPPINGS) - set(REFERENCE) == {"SaveImageWebsocket"}
