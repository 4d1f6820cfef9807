"""`comfy.model_management` for custom nodes: the interrupt check, devices and cache helpers.

The interrupt functions are the engine's (`comfyserve.engine.interrupt`), and
`InterruptProcessingException` is the very class the executor catches, so a pack's
`throw_exception_if_processing_interrupted()` inside a loop ends the prompt as interrupted.

Devices: the CUDA device when torch sees one and the server was not started with `--cpu`, then
Apple's MPS likewise, else the CPU. Intermediate results and offloaded models live on the CPU,
as with ComfyUI's default (not `--gpu-only`) memory modes. torch is imported on first use.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from comfyserve import runtime
from comfyserve.engine import interrupt
from comfyserve.engine.interrupt import InterruptProcessingException

__all__ = [
    "CPUState",
    "InterruptProcessingException",
    "VRAMState",
    "cpu_mode",
    "get_free_memory",
    "get_torch_device",
    "get_total_memory",
    "intermediate_device",
    "interrupt_current_processing",
    "is_device_cpu",
    "is_device_cuda",
    "is_device_mps",
    "mps_mode",
    "processing_interrupted",
    "soft_empty_cache",
    "throw_exception_if_processing_interrupted",
    "unet_offload_device",
]


class VRAMState(Enum):
    DISABLED = 0
    NO_VRAM = 1
    LOW_VRAM = 2
    NORMAL_VRAM = 3
    HIGH_VRAM = 4
    SHARED = 5


class CPUState(Enum):
    GPU = 0
    CPU = 1
    MPS = 2


# -- interrupt -------------------------------------------------------------------------------


def interrupt_current_processing(value: bool = True) -> None:
    """Ask the running prompt to stop (`value=False` withdraws a pending request)."""
    if value:
        interrupt.request_interrupt()
        return
    try:
        interrupt.throw_if_interrupted()  # consumes a pending request
    except InterruptProcessingException:
        pass


def processing_interrupted() -> bool:
    return interrupt.interrupt_requested()


def throw_exception_if_processing_interrupted() -> None:
    """Raise InterruptProcessingException if an interrupt is pending (and consume it)."""
    interrupt.throw_if_interrupted()


# -- devices ---------------------------------------------------------------------------------


def _torch() -> Any:
    import torch

    return torch


def _cuda_usable() -> bool:
    return not runtime.settings().cpu and _torch().cuda.is_available()


def _mps_usable() -> bool:
    if runtime.settings().cpu:
        return False
    mps = getattr(_torch().backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _cpu_state() -> CPUState:
    if _cuda_usable():
        return CPUState.GPU
    if _mps_usable():
        return CPUState.MPS
    return CPUState.CPU


def cpu_mode() -> bool:
    return _cpu_state() is CPUState.CPU


def mps_mode() -> bool:
    return _cpu_state() is CPUState.MPS


def is_nvidia() -> bool:
    torch = _torch()
    return _cuda_usable() and getattr(torch.version, "cuda", None) is not None


def get_torch_device() -> Any:
    torch = _torch()
    if _cuda_usable():
        return torch.device("cuda", torch.cuda.current_device())
    if _mps_usable():
        return torch.device("mps")
    return torch.device("cpu")


def intermediate_device() -> Any:
    return _torch().device("cpu")


def unet_offload_device() -> Any:
    return _torch().device("cpu")


def text_encoder_device() -> Any:
    return get_torch_device()


def text_encoder_offload_device() -> Any:
    return _torch().device("cpu")


def vae_device() -> Any:
    return get_torch_device()


def vae_offload_device() -> Any:
    return _torch().device("cpu")


def get_torch_device_name(device: Any) -> str:
    torch = _torch()
    if getattr(device, "type", None) == "cuda":
        return f"{device} {torch.cuda.get_device_name(device)}"
    return str(getattr(device, "type", device))


def is_device_type(device: Any, kind: str) -> bool:
    return getattr(device, "type", None) == kind


def is_device_cpu(device: Any) -> bool:
    return is_device_type(device, "cpu")


def is_device_cuda(device: Any) -> bool:
    return is_device_type(device, "cuda")


def is_device_mps(device: Any) -> bool:
    return is_device_type(device, "mps")


def get_total_memory(dev: Any = None, torch_total_too: bool = False) -> int | tuple[int, int]:
    """Bytes of memory of `dev` (default: the torch device); RAM for the CPU."""
    torch = _torch()
    dev = dev if dev is not None else get_torch_device()
    if is_device_cuda(dev):
        _free, total = torch.cuda.mem_get_info(dev)
        reserved = torch.cuda.memory_stats(dev).get("reserved_bytes.all.current", 0)
        return (total, reserved) if torch_total_too else total
    import psutil

    total = psutil.virtual_memory().total
    return (total, total) if torch_total_too else total


def get_free_memory(dev: Any = None, torch_free_too: bool = False) -> int | tuple[int, int]:
    """Free bytes on `dev` (default: the torch device); available RAM for the CPU."""
    torch = _torch()
    dev = dev if dev is not None else get_torch_device()
    if is_device_cuda(dev):
        free_cuda, _total = torch.cuda.mem_get_info(dev)
        stats = torch.cuda.memory_stats(dev)
        free_torch = stats.get("reserved_bytes.all.current", 0) - stats.get("active_bytes.all.current", 0)
        total_free = free_cuda + free_torch
        return (total_free, free_torch) if torch_free_too else total_free
    import psutil

    free = psutil.virtual_memory().available
    return (free, free) if torch_free_too else free


def soft_empty_cache(force: bool = False) -> None:
    """Give cached accelerator memory back to the driver."""
    torch = _torch()
    if _cuda_usable() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()
    elif _mps_usable():
        torch.mps.empty_cache()


def unload_all_models() -> None:
    """comfyserve's model nodes manage their own memory; this only empties the caches."""
    soft_empty_cache(True)


def xformers_enabled() -> bool:
    return False


def pytorch_attention_enabled() -> bool:
    return True


def should_use_fp16(device: Any = None, model_params: int = 0, prioritize_performance: bool = True, manual_cast: bool = False) -> bool:
    device = device if device is not None else get_torch_device()
    return is_device_cuda(device) or is_device_mps(device)


def should_use_bf16(device: Any = None, model_params: int = 0, prioritize_performance: bool = True, manual_cast: bool = False) -> bool:
    torch = _torch()
    device = device if device is not None else get_torch_device()
    return is_device_cuda(device) and torch.cuda.is_bf16_supported()


def __getattr__(name: str) -> Any:
    # ComfyUI's module state, computed on access.
    if name == "vram_state":
        return VRAMState.NORMAL_VRAM if not cpu_mode() else VRAMState.DISABLED
    if name == "cpu_state":
        return _cpu_state()
    if name == "OOM_EXCEPTION":
        return _torch().cuda.OutOfMemoryError
    raise AttributeError(f"module 'comfy.model_management' has no attribute {name!r}")
