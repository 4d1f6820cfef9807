"""What `/system_stats` reports: the machine's RAM, the compute device and the versions in use.

Torch is passed in by the caller (it takes seconds to import), so this module imports cheaply;
with no torch, or on `--cpu`, the device is the CPU and its memory is the machine's RAM, as
ComfyUI reports it.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib import metadata
from types import ModuleType
from typing import Any

import psutil

from comfyserve import COMFYUI_VERSION
from comfyserve.config import Settings

# The frontend and templates releases that ComfyUI 0.8.0 asks for; the web UI compares its own
# version with these and warns when it is older.
REQUIRED_FRONTEND_VERSION = "1.35.9"
REQUIRED_TEMPLATES_VERSION = "0.7.67"
TEMPLATES_PACKAGE = "comfyui-workflow-templates"


def package_version(name: str) -> str | None:
    """The installed version of distribution `name`, or None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def load_torch(cpu_only: bool) -> ModuleType | None:
    """Torch for device stats, imported on first use (blocks: call it from a thread).

    None on `--cpu` (the device is the CPU whatever torch sees) or when torch is not installed.
    """
    if cpu_only:
        return None
    try:
        return importlib.import_module("torch")
    except ImportError:
        return None


def ram() -> tuple[int, int]:
    """(total, available) bytes of system memory."""
    memory = psutil.virtual_memory()
    return int(memory.total), int(memory.available)


def is_embedded_python(executable: str = sys.executable) -> bool:
    """True for the Windows portable build, whose interpreter sits in `python_embeded/`."""
    return os.path.basename(os.path.dirname(executable)) == "python_embeded"


def _cpu_like_device(kind: str) -> dict[str, Any]:
    total, free = ram()
    return {
        "name": kind,
        "type": kind,
        "index": None,
        "vram_total": total,
        "vram_free": free,
        "torch_vram_total": total,
        "torch_vram_free": free,
    }


def _cuda_device(torch: ModuleType) -> dict[str, Any]:
    """The current CUDA device: driver-level totals plus what torch's allocator holds."""
    index = torch.cuda.current_device()
    device = torch.device("cuda", index)
    stats = torch.cuda.memory_stats(device)
    reserved = int(stats.get("reserved_bytes.all.current", 0))
    active = int(stats.get("active_bytes.all.current", 0))
    free_cuda, total_cuda = torch.cuda.mem_get_info(device)
    backend = torch.cuda.get_allocator_backend()
    return {
        "name": f"{device} {torch.cuda.get_device_name(device)} : {backend}",
        "type": "cuda",
        "index": index,
        "vram_total": int(total_cuda),
        "vram_free": int(free_cuda) + reserved - active,
        "torch_vram_total": reserved,
        "torch_vram_free": reserved - active,
    }


def devices(torch: ModuleType | None, cpu_only: bool) -> list[dict[str, Any]]:
    """The device nodes run on, in ComfyUI's `devices` entry shape (one entry)."""
    if torch is None or cpu_only:
        return [_cpu_like_device("cpu")]
    if torch.cuda.is_available():
        return [_cuda_device(torch)]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return [_cpu_like_device("mps")]
    return [_cpu_like_device("cpu")]


def system_stats(settings: Settings, torch: ModuleType | None) -> dict[str, Any]:
    """The `/system_stats` body."""
    total, free = ram()
    return {
        "system": {
            "os": sys.platform,
            "ram_total": total,
            "ram_free": free,
            "comfyui_version": COMFYUI_VERSION,
            "required_frontend_version": REQUIRED_FRONTEND_VERSION,
            "installed_templates_version": package_version(TEMPLATES_PACKAGE),
            "required_templates_version": REQUIRED_TEMPLATES_VERSION,
            "python_version": sys.version,
            "pytorch_version": package_version("torch") or "",
            "embedded_python": is_embedded_python(),
            "argv": list(settings.argv) or list(sys.argv),
        },
        "devices": devices(torch, settings.cpu),
    }
