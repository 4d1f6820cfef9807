"""Partial offload: run a module whose weights do not all fit on the compute device.

`PartialOffload(module, device, budget)` cuts the module into units (a submodule small enough
to move at once, or the direct weights of a larger container), keeps as many units resident on
the device as `budget` bytes allow, and streams the others: a forward pre-hook copies a unit's
weights to the device just before the unit runs and the forward hook drops the copies right
after (the originals never left the offload device, so nothing is copied back). At most one
streamed unit per nesting level is on the device at a time, so the device holds the resident
units plus the largest streamed unit (the budget keeps room for it).

Why hooks on submodules: the diffusers UNet and VAE call every weight through a submodule's
forward, so moving weights around those calls is invisible to the model code; weight patches
(LoRA) that rewrite `param.data` are seen too, because a unit reads `param.data` afresh each
time it is streamed. Containers without a forward of their own (ModuleList, ModuleDict) are
always cut further. The unit holding the model's first parameter is always resident, so
callers that read the model's device from its first parameter (`DiffusionModel.device`) get
the compute device and put their inputs there; the pre-hook moves any tensor input that is
still elsewhere as well.

Only modules that run through forward calls can be streamed: the CLIP text encoders read their
weights directly (comfyserve/text/encoder.py), so the memory manager never streams them.

The copy functions are injectable: tests "move" by changing dtype (float32 ↔ float64) on the
CPU, which makes any weight used without being moved fail loudly, and count what moved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

Transfer = Callable[[torch.Tensor], torch.Tensor]

DEFAULT_UNIT_BYTES = 64 * 1024**2  # a transformer block of SDXL is about 50 MB in fp16


@dataclass
class Unit:
    """Weights moved together: `tensors` are (owning module, name, is_parameter)."""

    module: torch.nn.Module
    tensors: list[tuple[torch.nn.Module, str, bool]]
    nbytes: int
    resident: bool = False
    depth: int = 0  # nested calls in flight
    stash: list[torch.Tensor] = field(default_factory=list)


def tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of the module's parameters and buffers (each tensor once)."""
    seen: set[int] = set()
    total = 0
    for t in [*module.parameters(), *module.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += tensor_bytes(t)
    return total


def _get(owner: torch.nn.Module, name: str, is_param: bool) -> torch.Tensor:
    return owner._parameters[name].data if is_param else owner._buffers[name]


def _set(owner: torch.nn.Module, name: str, is_param: bool, value: torch.Tensor) -> None:
    if is_param:
        owner._parameters[name].data = value  # the Parameter object stays (patches key on it)
    else:
        owner._buffers[name] = value


def partition(module: torch.nn.Module, unit_bytes: int = DEFAULT_UNIT_BYTES) -> list[Unit]:
    """The module's units in registration (roughly execution) order."""
    units: list[Unit] = []
    claimed: set[int] = set()
    seen_modules: set[int] = set()

    def own_tensors(mod: torch.nn.Module, recurse: bool) -> list[tuple[torch.nn.Module, str, bool]]:
        found = []
        for owner in (mod.modules() if recurse else [mod]):
            for name, p in owner._parameters.items():
                if p is not None and id(p) not in claimed:
                    claimed.add(id(p))
                    found.append((owner, name, True))
            for name, b in owner._buffers.items():
                if b is not None and id(b) not in claimed:
                    claimed.add(id(b))
                    found.append((owner, name, False))
        return found

    def size(tensors: list[tuple[torch.nn.Module, str, bool]]) -> int:
        return sum(tensor_bytes(_get(*t)) for t in tensors)

    def visit(mod: torch.nn.Module) -> None:
        if id(mod) in seen_modules:
            return
        seen_modules.add(id(mod))
        children = list(mod.children())
        container = isinstance(mod, (torch.nn.ModuleList, torch.nn.ModuleDict))
        if not container and (not children or module_bytes(mod) <= unit_bytes):
            tensors = own_tensors(mod, recurse=True)
            if tensors:
                units.append(Unit(mod, tensors, size(tensors)))
            return
        direct = own_tensors(mod, recurse=False)
        if direct and not container:
            units.append(Unit(mod, direct, size(direct)))
        for child in children:
            visit(child)

    visit(module)
    return units


def _device_copy(device: torch.device) -> Transfer:
    # Host-to-device copies may run asynchronously (stream order keeps them safe); copies back to
    # the CPU must not, since the CPU may read the result at once (LoRA patches, a later save).
    non_blocking = device.type != "cpu"
    return lambda t: t.to(device, non_blocking=non_blocking)


def _inputs_to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value if value.device == device else value.to(device)
    if isinstance(value, tuple):
        return tuple(_inputs_to(v, device) for v in value)
    if isinstance(value, list):
        return [_inputs_to(v, device) for v in value]
    if isinstance(value, dict):
        return {k: _inputs_to(v, device) for k, v in value.items()}
    return value


class PartialOffload:
    """`module` run on `device` with at most about `budget` bytes of its weights resident there."""

    def __init__(self, module: torch.nn.Module, device: torch.device | str, budget: int,
                 offload_device: torch.device | str = "cpu", unit_bytes: int = DEFAULT_UNIT_BYTES,
                 to_device: Transfer | None = None, to_offload: Transfer | None = None) -> None:
        self.module = module
        self.device = torch.device(device)
        self.offload_device = torch.device(offload_device)
        self._to_device = to_device or _device_copy(self.device)
        self._to_offload = to_offload or _device_copy(self.offload_device)
        self.units = partition(module, unit_bytes)
        self.total_bytes = sum(u.nbytes for u in self.units)
        # counters (what tests and the log look at)
        self.streamed_calls = 0
        self.streamed_bytes = 0
        self.in_flight_bytes = 0
        self.peak_bytes = 0
        self._handles: list[Any] = []
        self._choose(budget)
        for unit in self.units:
            if unit.resident:
                self._move(unit, self._to_device)
            else:
                self._hook(unit)
        self.peak_bytes = self.resident_bytes

    @property
    def resident_bytes(self) -> int:
        return sum(u.nbytes for u in self.units if u.resident)

    @property
    def streamed_units(self) -> list[Unit]:
        return [u for u in self.units if not u.resident]

    def _choose(self, budget: int) -> None:
        if not self.units:
            return
        first = next(self.module.parameters(), None)
        # Room for the largest unit in flight, the rest for resident units in order.
        room = budget - max(u.nbytes for u in self.units)
        used = 0
        for unit in self.units:
            holds_first = first is not None and any(
                is_param and owner._parameters[name] is first for owner, name, is_param in unit.tensors)
            if holds_first or used + unit.nbytes <= room:
                unit.resident = True
                used += unit.nbytes

    @staticmethod
    def _move(unit: Unit, transfer: Transfer) -> None:
        for owner, name, is_param in unit.tensors:
            _set(owner, name, is_param, transfer(_get(owner, name, is_param)))

    def _hook(self, unit: Unit) -> None:
        def pre(_module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            if unit.depth == 0:
                unit.stash = [_get(*t) for t in unit.tensors]
                for (owner, name, is_param), value in zip(unit.tensors, unit.stash, strict=True):
                    _set(owner, name, is_param, self._to_device(value))
                self.streamed_calls += 1
                self.streamed_bytes += unit.nbytes
                self.in_flight_bytes += unit.nbytes
                self.peak_bytes = max(self.peak_bytes, self.resident_bytes + self.in_flight_bytes)
            unit.depth += 1
            return _inputs_to(args, self.device), _inputs_to(kwargs, self.device)

        def post(_module: torch.nn.Module, _args: tuple, _output: Any) -> None:
            unit.depth -= 1
            if unit.depth == 0:
                for (owner, name, is_param), value in zip(unit.tensors, unit.stash, strict=True):
                    _set(owner, name, is_param, value)
                unit.stash = []
                self.in_flight_bytes -= unit.nbytes

        self._handles.append(unit.module.register_forward_pre_hook(pre, with_kwargs=True))
        self._handles.append(unit.module.register_forward_hook(post, always_call=True))

    def detach(self) -> None:
        """Remove the hooks and bring the resident units back to the offload device."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for unit in self.units:
            if unit.resident:
                self._move(unit, self._to_offload)
                unit.resident = False
