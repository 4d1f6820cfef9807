"""ComfyUI's `extra_model_paths.yaml`: more directories for the model folders.

The format, as ComfyUI and the A1111/Forge sample configs use it::

    comfyui:
        base_path: /data/comfy/          # relative paths below are taken from here
        is_default: true                 # optional: these directories go first
        checkpoints: models/checkpoints/
        loras: |
            models/loras
            /mnt/more/loras

Every top-level section is one set; `base_path` itself is relative to the YAML file's folder;
`~` and environment variables are expanded; a value may list several paths, one per line.
The legacy names `unet` and `clip` mean `diffusion_models` and `text_encoders`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

# Keys of a section that are settings, not folder names.
_SETTING_KEYS = frozenset({"base_path", "is_default"})


class ExtraModelPathsError(ValueError):
    """The YAML file cannot be read as an extra_model_paths config."""


def _expand(value: str) -> str:
    return os.path.expandvars(os.path.expanduser(value))


def load_extra_model_paths(config: Path) -> list[tuple[str, Path, bool]]:
    """(folder name, directory, goes first) for every path the file lists, in file order."""
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ExtraModelPathsError(f"cannot read extra model paths config {config}: {exc}") from exc
    if data is None:
        return []
    if not isinstance(data, dict):
        raise ExtraModelPathsError(f"{config}: expected named sections at the top level")
    here = config.resolve().parent
    found: list[tuple[str, Path, bool]] = []
    for section_name, section in data.items():
        if section is None:
            continue
        if not isinstance(section, dict):
            raise ExtraModelPathsError(f"{config}: section {section_name!r} is not a mapping")
        base = section.get("base_path")
        base_path = None
        if base is not None:
            base_path = Path(_expand(str(base)))
            if not base_path.is_absolute():
                base_path = here / base_path
        first = bool(section.get("is_default", False))
        for folder_name, value in section.items():
            if folder_name in _SETTING_KEYS or value is None:
                continue
            for line in str(value).splitlines():
                line = line.strip()
                if not line:
                    continue
                path = Path(_expand(line))
                if base_path is not None and not path.is_absolute():
                    path = base_path / path
                found.append((str(folder_name), path.resolve(), first))
    log.info("extra model paths from %s: %d directories", config, len(found))
    return found
