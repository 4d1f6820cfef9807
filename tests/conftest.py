"""Shared fixtures: a real comfyserve process per test module, and the ComfyUI reference data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serverproc import REFERENCE, ServerProcess


def reference(name: str) -> dict:
    """One capture file from ../shared/reference/comfyui."""
    return json.loads((REFERENCE / name).read_text())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A running server with a fresh base directory, shared by one test module."""
    proc = ServerProcess(tmp_path_factory.mktemp("base")).start()
    yield proc
    proc.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    """Start servers with extra CLI args: `make_server("--multi-user")`; all stopped afterwards."""
    started: list[ServerProcess] = []

    def start(*args: str, base: Path | None = None) -> ServerProcess:
        proc = ServerProcess(base or tmp_path / f"base{len(started)}", args=list(args)).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def sd15_mini_checkpoint() -> Path:
    """The golden sd15-mini checkpoint (generated once, cached in .cache/golden/)."""
    from tests.models.golden_checkpoint import cached

    return cached("sd15-mini")


@pytest.fixture(scope="session")
def lora_mini_file() -> Path:
    """The golden lora-mini LoRA (generated once, cached in .cache/golden/)."""
    from tests.models.golden_checkpoint import cached

    return cached("lora-mini")
