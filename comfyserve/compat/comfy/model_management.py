"""`comfy.model_management` for custom nodes: the interrupt check, devices, dtypes and memory.

The interrupt functions are the engine's (`comfyserve.engine.interrupt`), and
`InterruptProcessingException` is the very class the executor catches, so a pack's
`throw_exception_if_processing_interrupted()` inside a loop ends the prompt as interrupted.

Devices, VRAM state and dtypes answer from the server's one `DevicePolicy`
(comfyserve/models/devices.py, ComfyUI's rules), so a pack sees what comfyserve's own loaders
use; `load_models_gpu`, `free_memory` and `unload_all_models` drive the same memory manager
(comfyserve/models/memory.py) with comfyserve's model values. torch is imported on first use.
"""

from __future__ import annotations

from typing import Any

from comfyserve.engine import interrupt
from comfyserve.engine.interrupt import InterruptProcessingException
from comfyserve.models import devices

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


# The very enums the policy uses, so `model_management.vram_state == VRAMState.LOW_VRAM` works.
VRAMState = devices.VRAMState
CPUState = devices.CPUState


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


def _policy() -> devices.DevicePolicy:
    return devices.policy()


def cpu_mode() -> bool:
    return _policy().cpu_state is CPUState.CPU


def mps_mode() -> bool:
    return _policy().cpu_state is CPUState.MPS


def is_nvidia() -> bool:
    cap = _policy().capability
    return cap.kind == "cuda" and not cap.rocm


def is_amd() -> bool:
    cap = _policy().capability
    return cap.kind == "cuda" and cap.rocm


def is_intel_xpu() -> bool:
    return False


def get_torch_device() -> Any:
    return _policy().compute_device


def intermediate_device() -> Any:
    return _policy().intermediate_device


def unet_offload_device() -> Any:
    return _policy().unet_offload_device


def unet_inital_load_device(parameters: int = 0, dtype: Any = None) -> Any:  # ComfyUI's spelling
    return _policy().unet_load_device


def text_encoder_device() -> Any:
    return _policy().text_encoder_device


def text_encoder_offload_device() -> Any:
    return _policy().text_encoder_offload_device


def text_encoder_initial_device(load_device: Any = None, offload_device: Any = None, model_size: int = 0) -> Any:
    return offload_device if offload_device is not None else _policy().text_encoder_offload_device


def vae_device() -> Any:
    return _policy().vae_device


def vae_offload_device() -> Any:
    return _policy().vae_offload_device


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


# -- memory ----------------------------------------------------------------------------------


def get_total_memory(dev: Any = None, torch_total_too: bool = False) -> int | tuple[int, int]:
    """Bytes of memory of `dev` (default: the torch device); RAM for the CPU."""
    return devices.total_memory(dev, torch_total_too)


def get_free_memory(dev: Any = None, torch_free_too: bool = False) -> int | tuple[int, int]:
    """Free bytes on `dev` (default: the torch device); available RAM for the CPU."""
    return devices.free_memory(dev, torch_free_too)


def extra_reserved_memory() -> int:
    return _policy().extra_reserved_bytes


def minimum_inference_memory() -> int:
    return _policy().minimum_inference_bytes


def soft_empty_cache(force: bool = False) -> None:
    """Give cached accelerator memory back to the driver."""
    devices.empty_cache(get_torch_device())


def _memory() -> Any:
    from comfyserve.models import memory

    return memory


def load_models_gpu(models: list[Any], memory_required: int = 0, force_patch_weights: bool = False,
                    minimum_memory_required: int | None = None, force_full_load: bool = False) -> None:
    """Put comfyserve model values (MODEL, CLIP, VAE, or a torch module) on their compute device."""
    _memory().load_models(list(models), memory_required)


def load_model_gpu(model: Any) -> None:
    load_models_gpu([model])


def free_memory(memory_required: float, device: Any, keep_loaded: list[Any] | None = None) -> list[Any]:
    """Evict least recently used models from `device` until `memory_required` bytes are free."""
    memory = _memory()
    keep = [id(kind.holder(m)) for m in keep_loaded or [] if (kind := memory.kind_of(m)) is not None]
    memory.MEMORY.make_room(int(min(memory_required, 1 << 62)), device, keep)
    return []


def unload_all_models() -> None:
    """Every model off the accelerator (what POST /free does), then the caches emptied."""
    _memory().unload_all()
    soft_empty_cache(True)


def loaded_models(only_currently_used: bool = False) -> list[Any]:
    """Names of the models now on a compute device (comfyserve has no ModelPatcher objects)."""
    return [placed.name for placed in _memory().MEMORY.loaded()]


def cleanup_models() -> None:
    return None


def cleanup_models_gc() -> None:
    return None


# -- precision -------------------------------------------------------------------------------


def xformers_enabled() -> bool:
    return False


def xformers_enabled_vae() -> bool:
    return False


def pytorch_attention_enabled() -> bool:
    return True


def pytorch_attention_enabled_vae() -> bool:
    return not is_amd()


def pytorch_attention_flash_attention() -> bool:
    return _policy().capability.kind == "cuda"


def should_use_fp16(device: Any = None, model_params: int = 0, prioritize_performance: bool = True, manual_cast: bool = False) -> bool:
    return _policy().fp16_usable(device)


def should_use_bf16(device: Any = None, model_params: int = 0, prioritize_performance: bool = True, manual_cast: bool = False) -> bool:
    return _policy().bf16_usable(device)


def unet_dtype(device: Any = None, model_params: int = 0, supported_dtypes: list[Any] | None = None,
               weight_dtype: Any = None) -> Any:
    """The UNet dtype the policy chose (an explicit --*-unet flag, else fp16/bf16/fp32 by device)."""
    policy = _policy()
    chosen = policy.unet_dtype
    if supported_dtypes and chosen not in supported_dtypes and not policy.flags.unet_dtype:
        return _first_usable(supported_dtypes, device, policy)
    return chosen


def _first_usable(dtypes: list[Any], device: Any, policy: devices.DevicePolicy) -> Any:
    """The first half-precision dtype of `dtypes` that `device` computes well, else fp32."""
    torch = _torch()
    for dtype in dtypes:
        if (dtype == torch.float16 and policy.fp16_usable(device)) or (dtype == torch.bfloat16 and policy.bf16_usable(device)):
            return dtype
    return torch.float32


def unet_manual_cast(weight_dtype: Any, inference_device: Any, supported_dtypes: list[Any] | None = None) -> Any:
    """None: comfyserve computes in the weights' dtype."""
    return None


def vae_dtype(device: Any = None, allowed_dtypes: list[Any] | None = None) -> Any:
    """`--fp16/--bf16/--fp32-vae`, else the first of `allowed_dtypes` the device computes well, else fp32."""
    policy = _policy()
    torch = _torch()
    if allowed_dtypes is None:
        return policy.vae_dtype
    if policy.flags.vae_dtype and policy.vae_device.type != "cpu":
        return getattr(torch, policy.flags.vae_dtype)
    return _first_usable(allowed_dtypes, device, policy)


def text_encoder_dtype(device: Any = None) -> Any:
    return _policy().text_encoder_dtype


def dtype_size(dtype: Any) -> int:
    return devices.dtype_size(dtype)


def supports_dtype(device: Any, dtype: Any) -> bool:
    torch = _torch()
    if dtype == torch.float32:
        return True
    return not is_device_cpu(device) and dtype in (torch.float16, torch.bfloat16)


def device_supports_non_blocking(device: Any) -> bool:
    return not is_device_mps(device)


def cast_to_device(tensor: Any, device: Any, dtype: Any, copy: bool = False) -> Any:
    return tensor.to(device=device, dtype=dtype, copy=copy, non_blocking=device_supports_non_blocking(device))


def force_channels_last() -> bool:
    return False


def __getattr__(name: str) -> Any:
    # ComfyUI's module state, read from the policy on access.
    if name == "vram_state":
        return _policy().vram_state
    if name == "cpu_state":
        return _policy().cpu_state
    if name == "total_vram":
        return get_total_memory(get_torch_device()) / (1024 * 1024)
    if name == "OOM_EXCEPTION":
        return _torch().cuda.OutOfMemoryError
    raise AttributeError(f"module 'comfy.model_management' has no attribute {name!r}")
