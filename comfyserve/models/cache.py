"""Loaded models, cached by file (path, size, mtime) and shared between nodes; unloading for /free.

Two CheckpointLoaderSimple nodes naming the same file get the same objects; a file replaced on
disk (new mtime or size) loads afresh. `unload_models(...)` is what the worker calls for
`POST /free` and after an out-of-memory error (`ctx.extras["unload_models"]`): it forgets the
cached models and moves the ones still referenced off the accelerator (memory.py). Values
already in the node output cache keep their objects alive until that cache lets go
(`free_memory`).

This module imports no torch at import time, so registering it costs nothing at start-up
(the memory manager is imported when something is unloaded).
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class ModelCache:
    def __init__(self) -> None:
        self._entries: dict[tuple, Any] = {}
        self._lock = threading.RLock()
        # Everything loaded since start-up that is still alive, for moving off the GPU on unload.
        self._loaded: weakref.WeakSet = weakref.WeakSet()

    @staticmethod
    def file_key(path: Path | str) -> tuple:
        resolved = os.path.realpath(path)
        stat = os.stat(resolved)
        return resolved, stat.st_size, stat.st_mtime_ns

    def get(self, kind: str, path: Path | str, load: Callable[[], Any], *options: Any) -> Any:
        """The cached value for (`kind`, file, options), loading it with `load()` on a miss."""
        key = (kind, self.file_key(path), options)
        with self._lock:
            if key in self._entries:
                return self._entries[key]
            # A stale entry for an older version of the same file goes first.
            for old in [k for k in self._entries if k[0] == kind and k[1][0] == key[1][0] and k[2] == options]:
                del self._entries[old]
            value = load()
            self._entries[key] = value
            self.track(value)
            return value

    def track(self, value: Any) -> None:
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            try:
                self._loaded.add(item)
            except TypeError:
                pass

    def __len__(self) -> int:
        return len(self._entries)

    def unload_all(self) -> None:
        """Forget every cached model and move live ones to the CPU, tracked by the memory manager
        or not (e.g. loaded straight to the GPU with --highvram and never run), then whatever
        else the manager placed on a device."""
        import sys

        with self._lock:
            self._entries.clear()
            if "torch" not in sys.modules:
                return  # nothing was ever loaded
            from comfyserve.models import memory

            for item in list(self._loaded):
                try:
                    if memory.kind_of(item) is not None:
                        memory.MEMORY.unload(item)
                    elif callable(getattr(item, "unload", None)):
                        item.unload()
                except Exception:
                    log.exception("unloading %r failed", item)
            memory.unload_all()  # what the manager placed and nothing here still holds
        gc.collect()
        from comfyserve.models import devices

        devices.empty_cache()


MODELS = ModelCache()


def unload_models(unload_models: bool = True, free_memory: bool = False, **_: Any) -> None:
    """`POST /free` (and the OOM handler): with `unload_models` or `free_memory`, drop the models
    and move everything off the accelerator."""
    if unload_models or free_memory:
        count = len(MODELS)
        MODELS.unload_all()
        log.info("unloaded %d cached model file(s)", count)
