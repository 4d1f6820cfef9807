"""The device policy: each device/memory/precision flag on made-up accelerators (ComfyUI's rules),
without a GPU on the test machine."""

from __future__ import annotations

import pytest
import torch

from comfyserve import runtime
from comfyserve.config import Settings
from comfyserve.models import devices
from comfyserve.models.devices import (
    GIB,
    MIB,
    DeviceCapability,
    DevicePolicy,
    MemoryFlags,
    VRAMState,
    bf16_usable,
    fp16_usable,
)

AMPERE = DeviceCapability("cuda", 0, "NVIDIA GeForce RTX 3090", 8, 6, total_memory=24 * GIB)
TURING = DeviceCapability("cuda", 0, "NVIDIA GeForce RTX 2080", 7, 5, total_memory=8 * GIB)
TURING_1660 = DeviceCapability("cuda", 0, "NVIDIA GeForce GTX 1660 SUPER", 7, 5, total_memory=6 * GIB)
PASCAL = DeviceCapability("cuda", 0, "NVIDIA GeForce GTX 1080", 6, 1, total_memory=8 * GIB)
PASCAL_WINDOWS = DeviceCapability("cuda", 0, "NVIDIA GeForce GTX 1080", 6, 1, total_memory=8 * GIB, windows=True)
MAXWELL = DeviceCapability("cuda", 0, "NVIDIA GeForce GTX 970", 5, 2, total_memory=4 * GIB)
RDNA3 = DeviceCapability("cuda", 0, "AMD Radeon RX 7900 XTX", 11, 0, rocm=True, arch="gfx1100", total_memory=24 * GIB)
RDNA2 = DeviceCapability("cuda", 0, "AMD Radeon RX 6800", 10, 3, rocm=True, arch="gfx1030", total_memory=16 * GIB)
MAC14 = DeviceCapability("mps", name="mps", mac_version=(14, 2))
MAC13 = DeviceCapability("mps", name="mps", mac_version=(13, 6))
CPU = DeviceCapability()

CUDA0 = torch.device("cuda", 0)
HOST = torch.device("cpu")


def build(argv: list[str], cap: DeviceCapability) -> DevicePolicy:
    return DevicePolicy.build(MemoryFlags.from_argv(["main.py", *argv]), cap)


@pytest.mark.parametrize(("cap", "unet", "vae"), [
    (AMPERE, torch.float16, torch.bfloat16),
    (RDNA3, torch.float16, torch.bfloat16),
    (RDNA2, torch.float16, torch.float32),  # no bf16 on RDNA2 and older
    (TURING, torch.float16, torch.float32),
    (TURING_1660, torch.float32, torch.float32),  # fp16 is broken on these cards
    (PASCAL, torch.float32, torch.float32),  # fp16 slower than fp32 on Linux
    (PASCAL_WINDOWS, torch.float16, torch.float32),
    (MAXWELL, torch.float32, torch.float32),
    (MAC14, torch.float16, torch.bfloat16),
    (MAC13, torch.float16, torch.float32),
    (CPU, torch.float32, torch.float32),
], ids=["ampere", "rdna3", "rdna2", "turing", "gtx1660", "pascal", "pascal-windows", "maxwell", "mac14", "mac13", "cpu"])
def test_default_dtypes_follow_the_device(cap, unet, vae):
    policy = build([], cap)
    assert (policy.unet_dtype, policy.vae_dtype) == (unet, vae)
    assert policy.text_encoder_dtype == torch.float16  # ComfyUI's text-encoder dtype everywhere


def test_default_cuda_policy_is_normal_vram_with_cpu_offload():
    policy = build([], AMPERE)
    assert policy.compute_device == CUDA0 and policy.vram_state is VRAMState.NORMAL_VRAM
    assert policy.unet_load_device == HOST and policy.unet_offload_device == HOST
    assert policy.vae_device == CUDA0 and policy.vae_offload_device == HOST
    assert policy.text_encoder_device == CUDA0 and policy.text_encoder_offload_device == HOST
    assert policy.intermediate_device == HOST
    assert policy.manages_memory and policy.smart_memory
    assert policy.extra_reserved_bytes == 400 * MIB
    assert policy.minimum_inference_bytes == int(0.8 * GIB) + 400 * MIB


def test_cpu_flag_wins_over_a_gpu_and_keeps_fp32():
    policy = build(["--cpu", "--force-fp16", "--fp16-vae", "--bf16-unet"], AMPERE)
    assert policy.compute_device == HOST and policy.vram_state is VRAMState.DISABLED
    assert (policy.unet_dtype, policy.vae_dtype) == (torch.float32, torch.float32)
    assert not policy.manages_memory
    assert policy.vae_device == HOST and policy.text_encoder_device == HOST
    # Settings(cpu=True) means the same as the flag.
    assert MemoryFlags.from_argv(["main.py"], cpu=True).cpu


@pytest.mark.parametrize(("flag", "state"), [
    ("--normalvram", VRAMState.NORMAL_VRAM), ("--lowvram", VRAMState.LOW_VRAM), ("--novram", VRAMState.NO_VRAM),
    ("--highvram", VRAMState.HIGH_VRAM), ("--gpu-only", VRAMState.HIGH_VRAM),
])
def test_vram_flags_pick_the_mode(flag, state):
    assert build([flag], AMPERE).vram_state is state
    assert build([flag], CPU).vram_state is VRAMState.DISABLED
    assert build([flag], MAC14).vram_state is VRAMState.SHARED


def test_low_and_no_vram_run_text_encoders_on_the_cpu():
    for flag in ("--lowvram", "--novram"):
        policy = build([flag], AMPERE)
        assert policy.text_encoder_device == HOST and policy.vae_device == CUDA0
        assert policy.unet_load_device == HOST and policy.unet_offload_device == HOST


def test_highvram_keeps_the_unet_on_the_device():
    policy = build(["--highvram"], AMPERE)
    assert policy.unet_load_device == CUDA0 and policy.unet_offload_device == CUDA0
    assert policy.vae_offload_device == HOST and policy.text_encoder_offload_device == HOST
    assert policy.intermediate_device == HOST


def test_gpu_only_keeps_everything_on_the_device():
    policy = build(["--gpu-only"], AMPERE)
    for device in (policy.unet_load_device, policy.unet_offload_device, policy.vae_offload_device,
                   policy.text_encoder_device, policy.text_encoder_offload_device):
        assert device == CUDA0
    assert policy.flags.gpu_only
    assert policy.intermediate_device == HOST  # comfyserve's nodes make CPU tensors in every mode


def test_shared_memory_loads_straight_to_the_device():
    policy = build([], MAC14)
    assert policy.compute_device == torch.device("mps") and policy.unet_load_device == torch.device("mps")
    assert policy.unet_offload_device == HOST
    assert policy.text_encoder_device == HOST  # ComfyUI encodes text on the CPU on shared memory


def test_force_fp32_and_force_fp16():
    fp32 = build(["--force-fp32"], AMPERE)
    assert (fp32.unet_dtype, fp32.vae_dtype) == (torch.float32, torch.float32)
    assert fp32.text_encoder_device == HOST  # text encoders go to the GPU only where fp16 works
    fp16 = build(["--force-fp16"], PASCAL)
    assert fp16.unet_dtype == torch.float16 and fp16.text_encoder_device == CUDA0
    assert fp16_usable(MAXWELL, MemoryFlags(force_fp16=True))
    assert not fp16_usable(CPU, MemoryFlags(force_fp16=True))
    assert not bf16_usable(AMPERE, MemoryFlags(force_fp32=True))


@pytest.mark.parametrize(("flag", "dtype"), [
    ("--fp32-unet", torch.float32), ("--fp64-unet", torch.float64), ("--bf16-unet", torch.bfloat16),
    ("--fp16-unet", torch.float16),
])
def test_unet_dtype_flags(flag, dtype):
    assert build([flag], PASCAL).unet_dtype == dtype
    assert build([flag, "--force-fp32"], AMPERE).unet_dtype == dtype  # the explicit choice wins
    assert build([flag], CPU).unet_dtype == torch.float32


@pytest.mark.parametrize(("flag", "dtype"), [
    ("--fp16-vae", torch.float16), ("--bf16-vae", torch.bfloat16), ("--fp32-vae", torch.float32),
])
def test_vae_dtype_flags(flag, dtype):
    assert build([flag], TURING).vae_dtype == dtype
    assert build([flag], AMPERE).vae_dtype == dtype
    assert build([flag], CPU).vae_dtype == torch.float32


def test_cpu_vae_runs_the_vae_on_the_cpu_in_fp32():
    policy = build(["--cpu-vae", "--bf16-vae"], AMPERE)
    assert policy.vae_device == HOST and policy.vae_dtype == torch.float32
    assert policy.compute_device == CUDA0 and policy.unet_dtype == torch.float16


@pytest.mark.parametrize(("flag", "dtype"), [
    ("--fp16-text-enc", torch.float16), ("--bf16-text-enc", torch.bfloat16), ("--fp32-text-enc", torch.float32),
])
def test_text_encoder_dtype_flags_apply_on_every_device(flag, dtype):
    assert build([flag], AMPERE).text_encoder_dtype == dtype
    assert build([flag], CPU).text_encoder_dtype == dtype  # storage only: they compute in fp32


def test_reserve_vram_and_smart_memory():
    assert build(["--reserve-vram", "2"], AMPERE).extra_reserved_bytes == 2 * GIB
    assert build([], PASCAL_WINDOWS).extra_reserved_bytes == 600 * MIB
    big_windows = DeviceCapability("cuda", 0, "NVIDIA GeForce RTX 4090", 8, 9, total_memory=24 * GIB, windows=True)
    assert build([], big_windows).extra_reserved_bytes == 700 * MIB
    assert not build(["--disable-smart-memory"], AMPERE).smart_memory


def test_the_server_policy_follows_the_installed_settings(monkeypatch):
    monkeypatch.setattr(devices, "probe_capability", lambda cpu=False: CPU if cpu else AMPERE)
    monkeypatch.setattr(runtime, "_settings", Settings(argv=["main.py", "--lowvram", "--fp32-vae"]))
    policy = devices.policy()
    assert policy.vram_state is VRAMState.LOW_VRAM and policy.vae_dtype == torch.float32
    assert devices.policy() is policy  # built once
    monkeypatch.setattr(runtime, "_settings", Settings(cpu=True))
    assert devices.policy().vram_state is VRAMState.DISABLED
    override = build(["--novram"], AMPERE)
    devices.set_policy(override)
    try:
        assert devices.policy() is override
    finally:
        devices.set_policy(None)
    assert devices.policy().compute_device == HOST
