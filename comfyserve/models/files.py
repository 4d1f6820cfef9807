"""Reading model files into state dicts, safely.

`.safetensors`/`.sft` files are read with safetensors; pickled formats (`.ckpt`, `.pt`, `.pth`,
`.bin`) only with `torch.load(weights_only=True)`, so a file cannot run code. Lightning-style
checkpoints keep their tensors under a `state_dict` key, which is unwrapped as ComfyUI does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = frozenset({".safetensors", ".sft"})
PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin"})


class ModelFileError(RuntimeError):
    """A model file could not be read, or does not hold what it should."""


def load_state_dict(path: Path | str) -> dict[str, Any]:
    """All tensors of the model file at `path`, on the CPU, keyed by their names in the file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ModelFileError(f"Model file not found: {path}")
    if suffix in SAFETENSORS_SUFFIXES:
        return _load_safetensors(path)
    if suffix in PICKLE_SUFFIXES:
        return _load_pickle(path)
    raise ModelFileError(
        f"Unsupported model file type {path.suffix!r} for {path.name}: expected one of "
        f"{', '.join(sorted(SAFETENSORS_SUFFIXES | PICKLE_SUFFIXES))}"
    )


def _load_safetensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise ModelFileError(f"Could not read the safetensors file {path.name}: {err}") from err


def _load_pickle(path: Path) -> dict[str, Any]:
    import torch

    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelFileError(
            f"Could not read {path.name} as a weights-only torch file ({type(err).__name__}: {err}). "
            "Only plain tensors can be loaded from pickled checkpoints; convert it to .safetensors."
        ) from err
    if isinstance(data, dict) and "global_step" in data:
        log.debug("%s: global step %s", path.name, data.get("global_step"))
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise ModelFileError(f"{path.name} does not hold a state dict (found {type(data).__name__})")
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelFileError(f"{path.name} holds no tensors")
    return tensors


def safetensors_metadata(path: Path | str) -> dict[str, str]:
    """The `__metadata__` of a safetensors file ({} for other files or none)."""
    path = Path(path)
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES:
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception:
        return {}
