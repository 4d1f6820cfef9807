"""The running server's settings and folders, for code that cannot be handed them.

Node classes (ours and custom ones, through the `folder_paths` alias) look folders up here,
as ComfyUI nodes read its module globals. `create_app` installs them once at start-up.
"""

from __future__ import annotations

from comfyserve.config import Settings
from comfyserve.paths import Folders

_settings: Settings | None = None
_folders: Folders | None = None


def install(settings: Settings, folders: Folders) -> None:
    global _settings, _folders
    _settings, _folders = settings, folders


def settings() -> Settings:
    if _settings is None:
        _install_defaults()
    assert _settings is not None
    return _settings


def folders() -> Folders:
    if _folders is None:
        _install_defaults()
    assert _folders is not None
    return _folders


def _install_defaults() -> None:
    # Outside a server (unit tests, scripts): the current directory as base, like ComfyUI.
    defaults = Settings()
    install(defaults, Folders.from_settings(defaults))
