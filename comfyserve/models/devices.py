"""Where models compute and in which precision: the `DevicePolicy`, decided once per server.

ComfyUI decides these things from its command line and from what the accelerator can do; this
module states the same rules in comfyserve's terms, as pure functions of two dataclasses:

* `MemoryFlags`: the flags that matter here, read from the server's argv with ComfyUI's parser.
* `DeviceCapability`: what torch says about the accelerator (kind, name, compute capability,
  memory). `probe_capability()` asks torch; tests pass a made-up one, so every rule is checked
  on a machine without a GPU.

`DevicePolicy.build(flags, capability)` turns them into devices, a VRAM mode and dtypes:

* device: the CPU with `--cpu` or without an accelerator, else CUDA (ROCm included), else MPS;
* VRAM mode: `--lowvram` LOW, `--novram` NO, `--highvram`/`--gpu-only` HIGH, else NORMAL; the
  CPU is DISABLED (nothing to manage) and MPS SHARED (one memory for both);
* UNet dtype: an explicit `--fp32/--fp64/--bf16/--fp16-unet`, else fp16 where fp16 compute is
  sound, else bf16 where bf16 is, else fp32 (`fp16_usable`, `bf16_usable` below);
* VAE dtype: `--fp16/--bf16/--fp32-vae`, else bf16 where bf16 is sound, else fp32 (the SD VAE
  overflows in fp16, so fp16 is never chosen by itself);
* text encoders: stored in fp16 (`--fp16/--bf16/--fp32-text-enc` change it); they compute in
  fp32 on every device (comfyserve/text/encoder.py), so this only decides memory;
* CPU: fp32 weights for the UNet and VAE whatever the flags say. ComfyUI stores a flagged dtype
  there but computes in fp32 (its manual cast); comfyserve has no separate storage dtype, so it
  keeps fp32 and the CPU numbers never depend on precision flags.

Memory queries (`free_memory`, `total_memory`) measure what torch's allocator could still hand
out: the driver's free bytes plus what torch holds cached but unused.
"""

from __future__ import annotations

import logging
import platform
import threading
from dataclasses import dataclass
from enum import Enum
from typing import Any

import psutil

log = logging.getLogger(__name__)

GIB = 1024**3
MIB = 1024**2


class VRAMState(Enum):
    """ComfyUI's VRAM modes (the same names and values, which custom nodes compare against)."""

    DISABLED = 0  # the CPU: nothing to move
    NO_VRAM = 1  # stream every weight to the device per use
    LOW_VRAM = 2
    NORMAL_VRAM = 3
    HIGH_VRAM = 4  # keep everything on the device
    SHARED = 5  # one memory for CPU and device (Apple silicon)


class CPUState(Enum):
    GPU = 0
    CPU = 1
    MPS = 2


# -- the inputs --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceCapability:
    """What the accelerator can do, as far as the dtype and memory rules ask."""

    kind: str = "cpu"  # "cuda" (ROCm too) | "mps" | "cpu"
    index: int = 0
    name: str = ""
    major: int = 0  # CUDA compute capability (ROCm reports its own numbers here)
    minor: int = 0
    rocm: bool = False
    arch: str = ""  # ROCm's gcnArchName, e.g. "gfx1100"
    total_memory: int = 0
    windows: bool = False
    mac_version: tuple[int, ...] | None = None

    @property
    def device(self) -> Any:
        import torch

        if self.kind == "cuda":
            return torch.device("cuda", self.index)
        return torch.device(self.kind)


# ComfyUI's lists: Pascal cards where fp16 is slower than fp32 on Linux, Turing cards where fp16
# is broken, and AMD architectures (RDNA2 and older) without bf16.
PASCAL_SLOW_FP16 = ("1080", "1070", "titan x", "p3000", "p3200", "p4000", "p4200", "p5000", "p5200",
                    "p6000", "1060", "1050", "p40", "p100", "p6", "p4")
TURING_BROKEN_FP16 = ("1660", "1650", "1630", "T500", "T550", "T600", "MX550", "MX450", "CMP 30HX",
                      "T2000", "T1000", "T1200")
AMD_WITHOUT_BF16 = ("gfx1030", "gfx1031", "gfx1010", "gfx1011", "gfx1012", "gfx906", "gfx900", "gfx803")

VRAM_FLAGS = ("gpu_only", "highvram", "normalvram", "lowvram", "novram")
UNET_DTYPE_FLAGS = {"fp32_unet": "float32", "fp64_unet": "float64", "bf16_unet": "bfloat16", "fp16_unet": "float16"}
VAE_DTYPE_FLAGS = {"fp16_vae": "float16", "bf16_vae": "bfloat16", "fp32_vae": "float32"}
TEXT_DTYPE_FLAGS = {"fp16_text_enc": "float16", "bf16_text_enc": "bfloat16", "fp32_text_enc": "float32"}


@dataclass(frozen=True)
class MemoryFlags:
    """The command-line flags that decide devices, memory and precision (dtype names as strings,
    so building one needs no torch)."""

    cpu: bool = False
    vram: str = "normalvram"  # one of VRAM_FLAGS
    force_fp16: bool = False
    force_fp32: bool = False
    unet_dtype: str | None = None
    vae_dtype: str | None = None
    text_encoder_dtype: str | None = None
    cpu_vae: bool = False
    reserve_vram_gb: float | None = None
    smart_memory: bool = True

    @property
    def gpu_only(self) -> bool:
        return self.vram == "gpu_only"

    @classmethod
    def from_args(cls, args: Any, cpu: bool = False) -> MemoryFlags:
        """From a parsed ComfyUI namespace (`comfyserve.cli.build_parser()`)."""
        def chosen(table: dict[str, str]) -> str | None:
            return next((dtype for dest, dtype in table.items() if getattr(args, dest, False)), None)

        return cls(
            cpu=bool(cpu or getattr(args, "cpu", False)),
            vram=next((v for v in VRAM_FLAGS if getattr(args, v, False)), "normalvram"),
            force_fp16=bool(getattr(args, "force_fp16", False)),
            force_fp32=bool(getattr(args, "force_fp32", False)),
            unet_dtype=chosen(UNET_DTYPE_FLAGS),
            vae_dtype=chosen(VAE_DTYPE_FLAGS),
            text_encoder_dtype=chosen(TEXT_DTYPE_FLAGS),
            cpu_vae=bool(getattr(args, "cpu_vae", False)),
            reserve_vram_gb=getattr(args, "reserve_vram", None),
            smart_memory=not getattr(args, "disable_smart_memory", False),
        )

    @classmethod
    def from_argv(cls, argv: list[str], cpu: bool = False) -> MemoryFlags:
        """From a server argv (`["main.py", *flags]`, as `Settings.argv` holds it)."""
        from comfyserve.cli import build_parser

        args = build_parser().parse_known_args(list(argv[1:]))[0]
        return cls.from_args(args, cpu)


def probe_capability(cpu: bool = False) -> DeviceCapability:
    """The accelerator torch sees (the CPU with `cpu`, or when there is none)."""
    import torch

    if cpu:
        return DeviceCapability()
    windows = platform.system() == "Windows"
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return DeviceCapability(
            kind="cuda", index=index, name=str(props.name), major=int(props.major), minor=int(props.minor),
            rocm=bool(getattr(torch.version, "hip", None)), arch=str(getattr(props, "gcnArchName", "") or ""),
            total_memory=int(props.total_memory), windows=windows)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return DeviceCapability(kind="mps", name="mps", total_memory=psutil.virtual_memory().total,
                                mac_version=_mac_version())
    return DeviceCapability()


def _mac_version() -> tuple[int, ...] | None:
    try:
        return tuple(int(n) for n in platform.mac_ver()[0].split("."))
    except ValueError:
        return None


# -- the rules ---------------------------------------------------------------------------------
def fp16_usable(cap: DeviceCapability, flags: MemoryFlags) -> bool:
    """Whether fp16 compute is sound and fast on `cap` (ComfyUI's should_use_fp16, no manual cast)."""
    if cap.kind == "cpu":
        return False
    if flags.force_fp16:
        return True
    if flags.force_fp32:
        return False
    if cap.kind == "mps" or cap.rocm:
        return True
    if cap.major >= 8:
        return True
    if cap.major < 6:
        return False
    if any(n in cap.name.lower() for n in PASCAL_SLOW_FP16):
        return cap.windows  # fp16 works on these, but is slower than fp32 on Linux
    if cap.major < 7:
        return False
    return not any(n in cap.name for n in TURING_BROKEN_FP16)


def bf16_usable(cap: DeviceCapability, flags: MemoryFlags) -> bool:
    """Whether bf16 compute is native on `cap` (ComfyUI's should_use_bf16, no manual cast)."""
    if cap.kind == "cpu" or flags.force_fp32:
        return False
    if cap.kind == "mps":
        return cap.mac_version is not None and cap.mac_version >= (14,)
    if cap.rocm and any(a in cap.arch for a in AMD_WITHOUT_BF16):
        return False
    return cap.major >= 8


def vram_state_for(cap: DeviceCapability, flags: MemoryFlags) -> VRAMState:
    if flags.cpu or cap.kind == "cpu":
        return VRAMState.DISABLED
    if cap.kind == "mps":
        return VRAMState.SHARED
    return {"lowvram": VRAMState.LOW_VRAM, "novram": VRAMState.NO_VRAM, "highvram": VRAMState.HIGH_VRAM,
            "gpu_only": VRAMState.HIGH_VRAM}.get(flags.vram, VRAMState.NORMAL_VRAM)


def _dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def choose_unet_dtype(cap: DeviceCapability, flags: MemoryFlags) -> Any:
    if cap.kind == "cpu":
        return _dtype("float32")
    if flags.unet_dtype:
        return _dtype(flags.unet_dtype)
    if fp16_usable(cap, flags):
        return _dtype("float16")
    if bf16_usable(cap, flags):
        return _dtype("bfloat16")
    return _dtype("float32")


def choose_vae_dtype(cap: DeviceCapability, flags: MemoryFlags, on_cpu: bool = False) -> Any:
    """The SD VAE works in bf16 or fp32; fp16 only when asked for (`--fp16-vae`)."""
    if cap.kind == "cpu" or on_cpu:
        return _dtype("float32")
    if flags.vae_dtype:
        return _dtype(flags.vae_dtype)
    return _dtype("bfloat16") if bf16_usable(cap, flags) else _dtype("float32")


def choose_text_encoder_dtype(flags: MemoryFlags) -> Any:
    return _dtype(flags.text_encoder_dtype or "float16")


def extra_reserved_bytes(cap: DeviceCapability, flags: MemoryFlags) -> int:
    """Memory left alone for other programs and the driver: `--reserve-vram` GB, else 400 MB
    (Windows: 600 MB, 700 MB on cards over 15 GB, for its shared-memory fallback)."""
    if flags.reserve_vram_gb is not None:
        return int(flags.reserve_vram_gb * GIB)
    if cap.windows:
        return (700 if cap.total_memory > 15 * GIB else 600) * MIB
    return 400 * MIB


# -- the policy --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DevicePolicy:
    """Every device and dtype decision, made once (see the module docstring)."""

    capability: DeviceCapability
    flags: MemoryFlags
    compute_device: Any
    vram_state: VRAMState
    unet_dtype: Any
    vae_dtype: Any
    text_encoder_dtype: Any
    unet_load_device: Any  # where freshly loaded UNet weights go
    unet_offload_device: Any  # where the UNet waits between uses
    vae_device: Any
    vae_offload_device: Any
    text_encoder_device: Any
    text_encoder_offload_device: Any
    # Where latents and images live between nodes: the CPU in every mode. (ComfyUI keeps them on
    # the GPU with --gpu-only; comfyserve's nodes build their tensors on the CPU, and mixing the
    # two would fail, so --gpu-only here keeps the models, not the intermediates, on the GPU.)
    intermediate_device: Any
    extra_reserved_bytes: int = 400 * MIB
    inference_reserve_bytes: int = int(0.8 * GIB)  # activations' floor while a model runs
    smart_memory: bool = True

    @classmethod
    def build(cls, flags: MemoryFlags, capability: DeviceCapability) -> DevicePolicy:
        import torch

        cap = capability if not flags.cpu else DeviceCapability()
        cpu = torch.device("cpu")
        device = cap.device
        state = vram_state_for(cap, flags)
        high = state is VRAMState.HIGH_VRAM
        gpu_only = flags.gpu_only and cap.kind != "cpu"
        text_on_device = gpu_only or (state in (VRAMState.HIGH_VRAM, VRAMState.NORMAL_VRAM)
                                      and fp16_usable(cap, flags))
        vae_device = cpu if flags.cpu_vae else device
        return cls(
            capability=cap,
            flags=flags,
            compute_device=device,
            vram_state=state,
            unet_dtype=choose_unet_dtype(cap, flags),
            vae_dtype=choose_vae_dtype(cap, flags, on_cpu=vae_device.type == "cpu"),
            text_encoder_dtype=choose_text_encoder_dtype(flags),
            unet_load_device=device if state in (VRAMState.HIGH_VRAM, VRAMState.SHARED) else cpu,
            unet_offload_device=device if high else cpu,
            vae_device=vae_device,
            vae_offload_device=device if gpu_only else cpu,
            text_encoder_device=device if text_on_device else cpu,
            text_encoder_offload_device=device if gpu_only else cpu,
            intermediate_device=cpu,
            extra_reserved_bytes=extra_reserved_bytes(cap, flags) if cap.kind != "cpu" else 0,
            smart_memory=flags.smart_memory,
        )

    @property
    def manages_memory(self) -> bool:
        """False on the CPU: there is one memory and nothing to move."""
        return self.vram_state is not VRAMState.DISABLED

    @property
    def cpu_state(self) -> CPUState:
        return {"cuda": CPUState.GPU, "mps": CPUState.MPS}.get(self.capability.kind, CPUState.CPU)

    @property
    def minimum_inference_bytes(self) -> int:
        """Room always kept free for activations while a model runs (0.8 GiB + the reserve)."""
        return self.inference_reserve_bytes + self.extra_reserved_bytes

    def fp16_usable(self, device: Any = None) -> bool:
        return _kind(device, self) != "cpu" and fp16_usable(self.capability, self.flags)

    def bf16_usable(self, device: Any = None) -> bool:
        return _kind(device, self) != "cpu" and bf16_usable(self.capability, self.flags)

    def describe(self) -> str:
        return (f"device {self.compute_device} ({self.capability.name or self.capability.kind}), "
                f"vram state {self.vram_state.name}, unet {_short(self.unet_dtype)}, "
                f"vae {_short(self.vae_dtype)} on {self.vae_device}, text encoders "
                f"{_short(self.text_encoder_dtype)} on {self.text_encoder_device}")


def _kind(device: Any, policy: DevicePolicy) -> str:
    return getattr(device, "type", None) or policy.capability.kind


def _short(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


# -- the server's policy -----------------------------------------------------------------------
_lock = threading.Lock()
_policy: DevicePolicy | None = None
_policy_key: tuple | None = None
_override: DevicePolicy | None = None


def policy() -> DevicePolicy:
    """The running server's policy, built on first use from `runtime.settings()` (rebuilt only
    when other settings are installed, e.g. by tests)."""
    global _policy, _policy_key
    if _override is not None:
        return _override
    from comfyserve import runtime

    settings = runtime.settings()
    key = (id(settings), bool(settings.cpu), tuple(settings.argv or ()))
    with _lock:
        if _policy is None or _policy_key != key:
            flags = MemoryFlags.from_argv(list(settings.argv or ["main.py"]), cpu=settings.cpu)
            _policy = DevicePolicy.build(flags, probe_capability(flags.cpu))
            _policy_key = key
            log.info("Devices: %s", _policy.describe())
        return _policy


def set_policy(value: DevicePolicy | None) -> None:
    """Use `value` instead of the settings' policy (None: back to the settings)."""
    global _override
    _override = value


# -- memory queries ----------------------------------------------------------------------------
def _torch_memory(device: Any) -> tuple[int, int, int, int]:
    """(driver free, driver total, torch reserved, torch active) bytes of a CUDA device."""
    import torch

    free, total = torch.cuda.mem_get_info(device)
    stats = torch.cuda.memory_stats(device)
    return (int(free), int(total), int(stats.get("reserved_bytes.all.current", 0)),
            int(stats.get("active_bytes.all.current", 0)))


def free_memory(device: Any = None, torch_free_too: bool = False) -> int | tuple[int, int]:
    """Bytes a new allocation on `device` could get: driver-free plus torch's cached-but-unused
    blocks on CUDA; available RAM for the CPU and MPS."""
    device = device if device is not None else policy().compute_device
    if getattr(device, "type", None) == "cuda":
        free, _total, reserved, active = _torch_memory(device)
        cached = reserved - active
        return (free + cached, cached) if torch_free_too else free + cached
    available = int(psutil.virtual_memory().available)
    return (available, available) if torch_free_too else available


def total_memory(device: Any = None, torch_total_too: bool = False) -> int | tuple[int, int]:
    device = device if device is not None else policy().compute_device
    if getattr(device, "type", None) == "cuda":
        _free, total, reserved, _active = _torch_memory(device)
        return (total, reserved) if torch_total_too else total
    total = int(psutil.virtual_memory().total)
    return (total, total) if torch_total_too else total


def empty_cache(device: Any = None) -> None:
    """Hand torch's cached blocks back to the driver (after models left the device)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return
    kind = getattr(device, "type", None) or policy().capability.kind
    if kind == "cuda" and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()
    elif kind == "mps":
        mps = getattr(torch, "mps", None)
        if mps is not None and hasattr(mps, "empty_cache"):
            mps.empty_cache()


def dtype_size(dtype: Any) -> int:
    import torch

    return torch.empty((), dtype=dtype).element_size()
