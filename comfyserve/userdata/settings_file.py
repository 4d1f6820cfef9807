"""A user's UI settings: one JSON object in `comfy.settings.json` in the user's folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from comfyserve.userdata.atomic import write_bytes_atomic

log = logging.getLogger(__name__)

SETTINGS_FILE = "comfy.settings.json"


def load_settings(user_dir: Path) -> dict[str, Any]:
    """The user's settings; `{}` when the file is missing or unreadable (a corrupt file is logged)."""
    path = user_dir / SETTINGS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.error("the user settings file %s is unreadable, using no settings: %s", path, exc)
        return {}
    if not isinstance(data, dict):
        log.error("the user settings file %s does not hold a JSON object, using no settings", path)
        return {}
    return data


def save_settings(user_dir: Path, settings: dict[str, Any]) -> None:
    """Replace the user's settings file (indented like ComfyUI's, written atomically)."""
    write_bytes_atomic(user_dir / SETTINGS_FILE, json.dumps(settings, indent=4).encode())
