"""Reading `__metadata__` from a safetensors header without loading tensors."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from comfyserve.files.errors import FileRequestError
from comfyserve.files.safetensors_meta import read_metadata


def _write(path: Path, header: object, tensor_bytes: bytes = b"\0" * 16) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + tensor_bytes)
    return path


def test_reads_metadata(tmp_path: Path) -> None:
    header = {"__metadata__": {"format": "pt"}, "w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    assert read_metadata(_write(tmp_path / "m.safetensors", header)) == {"format": "pt"}


def test_no_metadata_is_none(tmp_path: Path) -> None:
    assert read_metadata(_write(tmp_path / "m.safetensors", {"w": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}})) is None


@pytest.mark.parametrize(
    "content",
    [b"", b"\x01\x02", struct.pack("<Q", 50) + b"{}", struct.pack("<Q", 3) + b"abc", struct.pack("<Q", 2) + b"[]",
     struct.pack("<Q", 2**62)],
)
def test_broken_files_are_a_clear_422(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(FileRequestError) as err:
        read_metadata(path)
    assert (err.value.status, err.value.kind) == (422, "invalid_safetensors")
