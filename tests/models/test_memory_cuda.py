"""The memory manager on a real CUDA device (skipped without one): weights really move, the
policy is the probed one, and partial offload gives the CPU's numbers within float tolerance.

Run on a GPU machine: `python -m pytest -q tests/models/test_memory_cuda.py`."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from comfyserve.models import devices
from comfyserve.models.devices import DevicePolicy, MemoryFlags, VRAMState
from comfyserve.models.memory import MemoryManager
from comfyserve.models.offload import module_bytes
from tests.models.test_diffusion_model import tiny_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def cuda_policy(*argv: str) -> DevicePolicy:
    flags = MemoryFlags.from_argv(["main.py", *argv])
    policy = DevicePolicy.build(flags, devices.probe_capability())
    # fp32 weights (the tiny models are fp32) and no reserve, so the made-up budget is exact.
    return dataclasses.replace(policy, extra_reserved_bytes=0, inference_reserve_bytes=0)


def bytes_on(module: torch.nn.Module, kind: str) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()] if t.device.type == kind)


def test_the_probed_policy_is_cuda():
    policy = cuda_policy()
    assert policy.compute_device.type == "cuda" and policy.vram_state is VRAMState.NORMAL_VRAM
    assert policy.unet_dtype in (torch.float16, torch.bfloat16, torch.float32)
    cap = policy.capability
    assert cap.major > 0 and cap.total_memory > 0
    free = devices.free_memory(policy.compute_device)
    assert 0 < free <= devices.total_memory(policy.compute_device)


def test_partial_offload_on_cuda_matches_the_cpu():
    model = tiny_model("sd1", seed=1)
    x, sigma, context = torch.randn(1, 4, 8, 8), torch.tensor([3.0]), torch.randn(1, 5, 768)
    expected = model.apply_model(x, sigma, c_crossattn=context)
    size = module_bytes(model.unet)
    manager = MemoryManager(cuda_policy(), free_memory=lambda d: size // 3, unit_bytes=512 * 1024)
    manager.load([model])
    (placed,) = manager.loaded()
    assert placed.partial and bytes_on(model.unet, "cuda") == placed.device_bytes <= size // 3
    assert model.device.type == "cuda"
    out = model.apply_model(x, sigma, c_crossattn=context)  # the UNet runs on CUDA, out comes back
    assert torch.allclose(out, expected, atol=1e-4, rtol=1e-4)
    assert bytes_on(model.unet, "cuda") == placed.device_bytes  # streamed copies were dropped
    manager.unload_all()
    assert bytes_on(model.unet, "cuda") == 0


def test_eviction_really_moves_weights_off_the_device():
    a, b = torch.nn.Linear(256, 256), torch.nn.Linear(256, 256)
    size = module_bytes(a)
    budget = {"free": int(1.5 * size)}
    manager = MemoryManager(cuda_policy(), free_memory=lambda d: budget["free"] - manager.loaded_bytes(d))
    manager.load([a])
    assert a.weight.device.type == "cuda"
    manager.load([b])
    assert a.weight.device.type == "cpu" and b.weight.device.type == "cuda"
    before = torch.cuda.memory_allocated()
    manager.unload_all()
    assert b.weight.device.type == "cpu" and torch.cuda.memory_allocated() < before
