"""The memory manager: which models are on the compute device, and making room for the next one.

Models load onto their offload device (the CPU, except with `--highvram`/`--gpu-only`) and are
moved to the compute device just before they run — `load_models([model], memory_required)` is
called by the sampler, by CLIP encoding and by VAE encode/decode. A model stays there after use
(ComfyUI's "smart memory": the next prompt with the same model moves nothing) until its room is
needed: before a model moves in, the least recently used other models go back to their offload
device until the free memory holds the newcomer plus an inference reserve (`memory_required`,
the caller's activation estimate, plus the policy's reserve; never less than 0.8 GiB + reserve).
With `--disable-smart-memory` every other model leaves the device first.

A model that does not fit even then — or every model with `--novram` — runs partially
offloaded (`offload.PartialOffload`): the part that fits stays resident, the rest is streamed
to the device one submodule at a time. `--highvram`/`--gpu-only` and Apple's shared memory load
models whole and never evict the ones whose offload device is the compute device. The CLIP text
encoders are never streamed (they read their weights directly); if they do not fit they run
where they are, on the CPU. On the CPU (`VRAMState.DISABLED`) nothing here does anything.

What moves is the weights a model shares with its clones: the DiffusionModel's UNet (its LoRA
patches are taken off first and put back on the device at the next step, as ComfyUI re-patches
on load), the VAE's autoencoder, the CLIP's encoder stack. The manager keeps weak references, so
a model nobody uses any more frees its memory as usual. `unload_all()` (`POST /free`, and the
worker after an out-of-memory error) moves everything to the CPU.

Free memory, the policy and the cache-emptying function are injectable, so tests run the
accounting on the CPU with a made-up budget.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from comfyserve.models import devices
from comfyserve.models.devices import MIB, DevicePolicy, VRAMState
from comfyserve.models.offload import DEFAULT_UNIT_BYTES, PartialOffload, module_bytes

log = logging.getLogger(__name__)

SAMPLING_USAGE_FACTOR = 2.0  # ComfyUI's base memory_usage_factor for its estimate below


def is_oom(err: BaseException) -> bool:
    """An out-of-memory error from any torch backend."""
    kinds = tuple(k for k in (getattr(torch, "OutOfMemoryError", None),
                              getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)) if k)
    return isinstance(err, kinds) or (isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


# -- what a model is made of -------------------------------------------------------------------
@dataclass(frozen=True)
class ModelKind:
    """How the manager handles one kind of model value (the UNet's, the VAE's, CLIP's)."""

    name: str
    holder: Callable[[Any], Any]  # the object clones share, which owns the weights
    modules: Callable[[Any], list[torch.nn.Module]]
    move: Callable[[Any, torch.device], None]  # the whole model to a device
    devices: Callable[[DevicePolicy], tuple[torch.device, torch.device]]  # (runs on, waits on)
    pinned: Callable[[DevicePolicy], bool]  # the offload device is the compute device: never evicted
    streamable: bool = True  # partial offload possible (such kinds are made of one module)
    point_at: Callable[[Any, torch.device], None] | None = None  # partial: where inputs should go
    prepare: Callable[[Any], None] | None = None  # before weights change place


def _restore_patches(shared: Any) -> None:
    with shared.lock:
        shared.restore()


def _move_module(module: torch.nn.Module, device: torch.device) -> None:
    module.to(device)


def _move_encoders(stack: Any, device: torch.device) -> None:
    for encoder in stack.encoders.values():
        encoder.to(device)


def _set_vae_device(vae: Any, device: torch.device) -> None:
    vae.device = torch.device(device)


UNET = ModelKind(
    "unet", holder=lambda model: model._shared, modules=lambda shared: [shared.unet],
    move=lambda shared, device: shared.unet.to(device),
    devices=lambda p: (p.compute_device, p.unet_offload_device),
    pinned=lambda p: p.vram_state is VRAMState.HIGH_VRAM, prepare=_restore_patches)
VAE = ModelKind(
    "vae", holder=lambda vae: vae, modules=lambda vae: [vae.autoencoder], move=lambda vae, device: vae.to(device),
    devices=lambda p: (p.vae_device, p.vae_offload_device), pinned=lambda p: p.flags.gpu_only,
    point_at=_set_vae_device)
CLIP = ModelKind(
    "clip", holder=lambda clip: clip.cond_stage_model,
    modules=lambda stack: [encoder.model for encoder in stack.encoders.values()], move=_move_encoders,
    devices=lambda p: (p.text_encoder_device, p.text_encoder_offload_device), pinned=lambda p: p.flags.gpu_only,
    streamable=False)
MODULE = ModelKind(
    "module", holder=lambda module: module, modules=lambda module: [module], move=_move_module,
    devices=lambda p: (p.compute_device, p.unet_offload_device),
    pinned=lambda p: p.vram_state is VRAMState.HIGH_VRAM)


def kind_of(model: Any) -> ModelKind | None:
    """The kind of a model value, by what it holds (None: nothing the manager can move)."""
    if isinstance(model, torch.nn.Module):
        return MODULE
    try:
        if getattr(model, "_shared", None) is not None and isinstance(getattr(model, "unet", None), torch.nn.Module):
            return UNET
        if isinstance(getattr(model, "autoencoder", None), torch.nn.Module):
            return VAE
        if hasattr(getattr(model, "cond_stage_model", None), "encoders"):
            return CLIP
    except Exception:  # a lazily built value (PendingClip) that cannot build yet
        return None
    return None


def _name(holder: Any) -> str:
    return str(getattr(holder, "name", "") or getattr(holder, "family", "") or type(holder).__name__)


# -- the manager -------------------------------------------------------------------------------
@dataclass
class _Loaded:
    key: int
    kind: ModelKind
    holder: weakref.ref
    name: str
    device: torch.device
    offload_device: torch.device
    total_bytes: int
    pinned: bool
    partial: PartialOffload | None = None

    @property
    def device_bytes(self) -> int:
        return self.total_bytes if self.partial is None else self.partial.resident_bytes


@dataclass(frozen=True)
class Placement:
    """A model on a compute device, as `loaded()` reports it."""

    name: str
    kind: str
    device: torch.device
    device_bytes: int
    total_bytes: int
    partial: bool


@dataclass(frozen=True)
class _Want:
    key: int
    kind: ModelKind
    holder: Any
    device: torch.device
    offload_device: torch.device
    pinned: bool
    total_bytes: int  # all its weights


class MemoryManager:
    """Models on the compute device, least recently used first (see the module docstring)."""

    def __init__(self, policy: DevicePolicy | None = None, free_memory: Callable[[torch.device], int] | None = None,
                 empty_cache: Callable[[torch.device], None] | None = None,
                 unit_bytes: int = DEFAULT_UNIT_BYTES) -> None:
        self._policy = policy
        self._free_memory = free_memory or devices.free_memory
        self._empty_cache = empty_cache or devices.empty_cache
        self.unit_bytes = unit_bytes
        self._loaded: OrderedDict[int, _Loaded] = OrderedDict()
        self._lock = threading.RLock()

    @property
    def policy(self) -> DevicePolicy:
        return self._policy if self._policy is not None else devices.policy()

    def free(self, device: torch.device) -> int:
        return int(self._free_memory(device))

    # -- queries ---------------------------------------------------------------------------------
    def loaded(self) -> list[Placement]:
        with self._lock:
            self._purge()
            return [Placement(r.name, r.kind.name, r.device, r.device_bytes, r.total_bytes, r.partial is not None)
                    for r in self._loaded.values()]

    def loaded_bytes(self, device: torch.device | None = None) -> int:
        with self._lock:
            self._purge()
            return sum(r.device_bytes for r in self._loaded.values() if device is None or r.device == device)

    def is_loaded(self, model: Any) -> bool:
        kind = kind_of(model)
        return kind is not None and id(kind.holder(model)) in self._loaded

    # -- loading ---------------------------------------------------------------------------------
    def load(self, models: Iterable[Any], memory_required: int = 0) -> None:
        """Put `models` on their compute device, making room (see the module docstring)."""
        policy = self.policy
        if not policy.manages_memory:
            return
        with self._lock:
            self._purge()
            wanted = self._wanted(models, policy)
            if not wanted:
                return
            keep = {w.key for w in wanted}
            reserve = max(policy.minimum_inference_bytes, int(memory_required) + policy.extra_reserved_bytes)
            need: dict[torch.device, int] = {}
            for w in wanted:
                need[w.device] = need.get(w.device, 0) + self._missing_bytes(w)
            for device, missing in need.items():
                if not policy.smart_memory:
                    self._evict(lambda r, d=device: r.device == d and r.key not in keep and not r.pinned, device)
                # Even with nothing to move in, the activations need their reserve.
                self.make_room(missing + reserve, device, keep)
            for w in wanted:
                self._place(w, policy, reserve)

    def make_room(self, required: int, device: torch.device, keep: Iterable[int] = ()) -> int:
        """Evict least recently used models from `device` until `required` bytes are free (or
        nothing evictable is left); the number evicted."""
        keep = set(keep)
        evicted = 0
        with self._lock:
            for record in list(self._loaded.values()):
                if self.free(device) >= required:
                    break
                if record.key in keep or record.device != device or record.pinned:
                    continue
                log.info("Unloading %s %s from %s to make room", record.kind.name, record.name, device)
                self._unplace(record, record.offload_device)
                evicted += 1
        if evicted:
            self._empty_cache(device)
        return evicted

    def unload_all(self) -> int:
        """Every model off the compute device, to the CPU (`POST /free`); the number moved."""
        cpu = torch.device("cpu")
        with self._lock:
            records = list(self._loaded.values())
            for record in records:
                self._unplace(record, cpu)
        for device in {r.device for r in records}:
            self._empty_cache(device)
        return len(records)

    def unload(self, model: Any, device: torch.device | str = "cpu") -> None:
        """Move one model (tracked or not) to `device`, its patches taken off first."""
        kind = kind_of(model)
        if kind is None:
            return
        holder = kind.holder(model)
        with self._lock:
            record = self._loaded.get(id(holder))
            if record is not None:
                self._unplace(record, torch.device(device))
                return
            if kind.prepare:
                kind.prepare(holder)
            kind.move(holder, torch.device(device))

    # -- internals -------------------------------------------------------------------------------
    def _purge(self) -> None:
        for key in [k for k, r in self._loaded.items() if r.holder() is None]:
            del self._loaded[key]

    def _wanted(self, models: Iterable[Any], policy: DevicePolicy) -> list[_Want]:
        wanted: dict[int, _Want] = {}
        for model in models:
            kind = kind_of(model)
            if kind is None:
                continue
            holder = kind.holder(model)
            if id(holder) in wanted:
                continue
            modules = kind.modules(holder)
            if not modules:
                continue
            device, offload = (torch.device(d) for d in kind.devices(policy))
            if device.type == "cpu" and policy.compute_device.type != "cpu":
                continue  # this kind runs on the CPU in this mode (--cpu-vae, text encoders in low VRAM)
            record = self._loaded.get(id(holder))
            total = record.total_bytes if record is not None else sum(module_bytes(m) for m in modules)
            wanted[id(holder)] = _Want(id(holder), kind, holder, device, offload, kind.pinned(policy), total)
        return list(wanted.values())

    def _missing_bytes(self, want: _Want) -> int:
        record = self._loaded.get(want.key)
        return want.total_bytes - (record.device_bytes if record is not None else 0)

    def _place(self, want: _Want, policy: DevicePolicy, reserve: int) -> None:
        kind, holder = want.kind, want.holder
        record = self._loaded.get(want.key)
        if record is not None and record.partial is None:
            self._loaded.move_to_end(want.key)
            return
        total = want.total_bytes
        held = record.device_bytes if record is not None else 0
        budget = max(0, self.free(want.device) + held - reserve)
        if policy.vram_state is VRAMState.NO_VRAM:
            budget = 0
        whole = want.pinned or policy.vram_state in (VRAMState.HIGH_VRAM, VRAMState.SHARED) or total <= budget
        if record is not None:
            if not whole:
                self._loaded.move_to_end(want.key)  # stays partial; nothing more fits
                return
            self._unplace(record, want.offload_device)
        if kind.prepare:
            kind.prepare(holder)
        if whole:
            try:
                kind.move(holder, want.device)
                self._record(want, total)
                log.debug("loaded %s %s completely on %s (%.0f MB)", kind.name, _name(holder), want.device, total / MIB)
                return
            except Exception as err:
                if not is_oom(err):
                    raise
                kind.move(holder, want.offload_device)
                self._empty_cache(want.device)
                log.warning("%s %s did not fit on %s; running it partially offloaded", kind.name, _name(holder),
                            want.device)
                budget = max(0, self.free(want.device) - reserve)
        if not kind.streamable:
            log.info("%s %s (%.0f MB) does not fit on %s; it runs on %s", kind.name, _name(holder), total / MIB,
                     want.device, want.offload_device)
            return
        (module,) = kind.modules(holder)
        partial = PartialOffload(module, want.device, budget, want.offload_device, self.unit_bytes)
        if kind.point_at:
            kind.point_at(holder, want.device)
        self._record(want, total, partial)
        log.info("loaded %s %s partially on %s: %.0f of %.0f MB resident, the rest streamed", kind.name,
                 _name(holder), want.device, partial.resident_bytes / MIB, total / MIB)

    def _record(self, want: _Want, total: int, partial: Any = None) -> None:
        self._loaded[want.key] = _Loaded(want.key, want.kind, weakref.ref(want.holder), _name(want.holder),
                                         want.device, want.offload_device, total, want.pinned, partial)
        self._loaded.move_to_end(want.key)

    def _unplace(self, record: _Loaded, target: torch.device) -> None:
        self._loaded.pop(record.key, None)
        holder = record.holder()
        if holder is None:
            return
        if record.kind.prepare:
            record.kind.prepare(holder)
        if record.partial is not None:
            record.partial.detach()
            if target != record.offload_device:
                record.kind.move(holder, target)
            elif record.kind.point_at:
                record.kind.point_at(holder, target)
        else:
            record.kind.move(holder, target)

    def _evict(self, match: Callable[[_Loaded], bool], device: torch.device) -> None:
        records = [r for r in self._loaded.values() if match(r)]
        for record in records:
            self._unplace(record, record.offload_device)
        if records:
            self._empty_cache(device)


# -- estimates ---------------------------------------------------------------------------------
def sampling_memory(model: Any, noise_shape: Sequence[int], policy: DevicePolicy | None = None) -> int:
    """Activation memory of one sampling step for latents of `noise_shape` (cond and uncond
    batched together), ComfyUI's estimate: per latent pixel, dtype size × 0.01 MB with SDPA's
    memory-efficient kernels (CUDA), 0.15 MB otherwise, times the usage factor."""
    policy = policy or devices.policy()
    dtype = getattr(model, "dtype", None)
    size = devices.dtype_size(dtype) if isinstance(dtype, torch.dtype) else 4
    area = 2 * noise_shape[0] * math.prod(noise_shape[2:])
    per_pixel = size * 0.01 if policy.capability.kind == "cuda" else 0.15
    return int(area * per_pixel * SAMPLING_USAGE_FACTOR * MIB)


# -- the server's manager ----------------------------------------------------------------------
MEMORY = MemoryManager()


def load_models(models: Iterable[Any], memory_required: int = 0) -> None:
    """Put `models` on their compute devices before they run (no-op on the CPU)."""
    MEMORY.load(models, memory_required)


def unload_all() -> int:
    return MEMORY.unload_all()

