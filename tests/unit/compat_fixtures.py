"""Fixtures for the compat tests: the aliases installed, and a fresh base directory as runtime."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyserve import compat, runtime
from comfyserve.config import Settings
from comfyserve.paths import Folders


@pytest.fixture
def aliases() -> Iterator[None]:
    """ComfyUI's module names importable for the test, removed again afterwards."""
    was_installed = compat.installed()
    compat.install()
    yield
    if not was_installed:
        compat.uninstall()


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Folders:
    """A fresh base directory installed as the runtime's folders (restored afterwards)."""
    settings = Settings(base_directory=tmp_path, cpu=True)
    found = Folders.from_settings(settings)
    found.ensure()
    monkeypatch.setattr(runtime, "_settings", settings)
    monkeypatch.setattr(runtime, "_folders", found)
    return found
