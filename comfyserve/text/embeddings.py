"""Textual-inversion embeddings (`embedding:name` in a prompt), found and read as ComfyUI does.

Lookup: every embeddings folder and all of its sub-folders (links followed) are searched for
`name`, then `name.safetensors`, `name.pt`, `name.bin`; a name that would leave the folder is
skipped. Reading: `.safetensors` with safetensors, anything else with
`torch.load(weights_only=True)`, falling back to pulling the raw float32 arrays out of an old
pickled zip. The vectors are picked out of the formats in circulation:

- A1111 `.pt`: `{"string_to_param": {"*": tensor [n, width]}, ...}`
- a list of dicts of tensors: every tensor whose last dimension is the encoder width
- a dict keyed by encoder (`clip_l`, `clip_g`, ... as in SDXL embeddings): the encoder's key
- LoRA-bundled embeddings: `bundle_emb.<name>.string_to_param.*` (or `...<encoder key>`)
- otherwise the first tensor in the file.

Loaded vectors are cached by (path, size, mtime) so a prompt that repeats one does not re-read it.
"""

from __future__ import annotations

import logging
import os
import threading
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

EXTENSIONS = (".safetensors", ".pt", ".bin")

_cache: dict[tuple[str, int, int, int, str | None], torch.Tensor | None] = {}
_cache_lock = threading.Lock()
_CACHE_MAX = 64


def embedding_directories() -> list[Path]:
    """The server's embeddings folders, in search order."""
    from comfyserve import runtime

    folder = runtime.folders().model_folder("embeddings")
    return list(folder.paths) if folder is not None else []


def _expand(directories: Iterable[Path | str]) -> list[str]:
    # The folders and every sub-folder below them, each once, in a stable order.
    seen: dict[str, None] = {}
    for directory in directories:
        root = os.path.abspath(str(directory))
        seen.setdefault(root, None)
        for dirpath, _dirnames, _files in os.walk(root, followlinks=True):
            seen.setdefault(os.path.abspath(dirpath), None)
    return list(seen)


def find_embedding(name: str, directories: Iterable[Path | str]) -> Path | None:
    """The file `embedding:name` refers to, or None."""
    if not name or "\0" in name:
        return None
    for directory in _expand(directories):
        candidate = os.path.abspath(os.path.join(directory, name))
        try:
            if os.path.commonpath((directory, candidate)) != directory:
                continue
        except ValueError:
            continue
        if os.path.isfile(candidate):
            return Path(candidate)
        for ext in EXTENSIONS:
            if os.path.isfile(candidate + ext):
                return Path(candidate + ext)
    return None


def _floats_from_zip(path: Path) -> torch.Tensor | None:
    # Old pickled embeddings torch.load(weights_only=True) refuses: take the last tensor blob
    # that holds at least one 768-wide vector (768 wide if it divides evenly, else 1024).
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if "data/" in n]
        for entry in reversed(names):
            data = archive.read(entry)
            count = len(data) // 4
            if count < 768:
                continue
            width = 768 if count % 768 == 0 else 1024
            values = torch.frombuffer(bytearray(data[: count * 4]), dtype=torch.float32)
            return values[: (count // width) * width].reshape(-1, width).clone()
    return None


def _bundled(data: dict[str, Any], prefix: str, suffix: str) -> torch.Tensor | None:
    parts = [v for k, v in data.items() if k.startswith(prefix) and k.endswith(suffix)]
    return torch.cat(parts, dim=0) if parts else None


def _pick_vectors(data: Any, width: int, key: str | None) -> torch.Tensor | None:
    if isinstance(data, dict) and "string_to_param" in data:
        return next(iter(data["string_to_param"].values()))
    if isinstance(data, list):
        rows = [t.reshape(-1, t.shape[-1]) for item in data for t in item.values()
                if torch.is_tensor(t) and t.shape[-1] == width]
        return torch.cat(rows, dim=0) if rows else None
    if not isinstance(data, dict) or not data:
        return None
    if key is not None and key in data:
        return data[key]
    found = _bundled(data, "bundle_emb.", ".string_to_param.*")
    if found is None and key is not None:
        found = _bundled(data, "bundle_emb.", f".{key}")
    if found is None:
        found = next(iter(data.values()))
    return found


def read_embedding(path: Path, width: int, key: str | None) -> torch.Tensor | None:
    """The vectors stored in embedding file `path` for an encoder of `width` (key `key`)."""
    try:
        if path.name.lower().endswith(".safetensors"):
            import safetensors.torch

            data: Any = safetensors.torch.load_file(str(path), device="cpu")
        else:
            try:
                data = torch.load(str(path), weights_only=True, map_location="cpu")
            except Exception:
                return _floats_from_zip(path)
    except Exception:
        log.warning("error loading embedding, skipping loading: %s", path, exc_info=True)
        return None
    try:
        vectors = _pick_vectors(data, width, key)
    except Exception:
        log.warning("error reading embedding %s, skipping", path, exc_info=True)
        return None
    return vectors if torch.is_tensor(vectors) else None


def load_embedding(name: str, directories: Sequence[Path | str], width: int,
                   key: str | None) -> torch.Tensor | None:
    """The vectors of `embedding:name` ([n, width'] or [width']), or None when there is none."""
    path = find_embedding(name, directories)
    if path is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return None
    cache_key = (str(path), stat.st_size, stat.st_mtime_ns, width, key)
    with _cache_lock:
        if cache_key in _cache:
            return _cache[cache_key]
    vectors = read_embedding(path, width, key)
    with _cache_lock:
        if len(_cache) >= _CACHE_MAX:
            _cache.pop(next(iter(_cache)))
        _cache[cache_key] = vectors
    return vectors
