"""The golden checkpoints generated here are the ones the goldens were made with."""

from __future__ import annotations

import hashlib

import pytest

from tests.models import golden_checkpoint as gc


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def test_lora_mini_is_bit_identical(tmp_path):
    path = gc.write("lora-mini", tmp_path / "lora-mini.safetensors")
    assert file_sha256(path) == gc.manifest("lora-mini")["file_sha256"]


def test_sd15_mini_cached_file_matches_the_recipe(sd15_mini_checkpoint):
    spec = gc.manifest("sd15-mini")
    assert sd15_mini_checkpoint.stat().st_size == spec["file_bytes"]
    # The content hash was verified when the file was generated; the writer is the recipe's too.
    assert file_sha256(sd15_mini_checkpoint) == spec["file_sha256"]


def test_a_wrong_value_is_caught(monkeypatch):
    original = gc.tensor_value

    def off_by_one(key, shape):
        value = original(key, shape)
        if key.endswith("proj_in.alpha"):
            value = value + 1
        return value

    monkeypatch.setattr(gc, "tensor_value", off_by_one)
    with pytest.raises(gc.GoldenMismatch, match="proj_in.alpha"):
        gc.generate("lora-mini")
