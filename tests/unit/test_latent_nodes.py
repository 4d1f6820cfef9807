"""Latent nodes without a model: ComfyUI's shapes and `/object_info` entries."""

from __future__ import annotations

import json

import torch

import nodes
from comfyserve.engine.registry import NodeRegistry
from nodes.latent import EmptyLatentImage
from tests.conftest import reference


def test_empty_latent_is_zeros_at_an_eighth_of_the_size():
    (latent,) = EmptyLatentImage().generate(width=72, height=64, batch_size=3)
    assert set(latent) == {"samples"}
    samples = latent["samples"]
    assert samples.shape == (3, 4, 8, 9) and samples.dtype == torch.float32
    assert not samples.any()


def test_object_info_equals_comfyui():
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    expected = reference("object_info_full.json")["body"]["EmptyLatentImage"]
    assert json.loads(json.dumps(registry.node_info("EmptyLatentImage"))) == expected
