"""`/system_stats` contents, built without a server: RAM, devices, versions."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import psutil

from comfyserve import COMFYUI_VERSION, sysinfo
from comfyserve.config import Settings
from tests.conftest import reference

REFERENCE_STATS = reference("routes_basic.json")["GET /system_stats"]["response"]["body"]["json"]


def test_cpu_stats_have_the_reference_fields_and_real_memory():
    stats = sysinfo.system_stats(Settings(cpu=True, argv=["main.py", "--cpu"]), torch=None)
    assert stats.keys() == REFERENCE_STATS.keys()
    system = stats["system"]
    assert system.keys() == REFERENCE_STATS["system"].keys()
    for key, value in REFERENCE_STATS["system"].items():
        if value is not None and key != "installed_templates_version":
            assert type(system[key]) is type(value), key
    assert system["comfyui_version"] == COMFYUI_VERSION == "0.8.0"
    assert system["os"] == sys.platform
    assert system["python_version"] == sys.version
    assert system["argv"] == ["main.py", "--cpu"]
    assert 0 < system["ram_free"] <= system["ram_total"] == psutil.virtual_memory().total
    [device] = stats["devices"]
    assert device.keys() == REFERENCE_STATS["devices"][0].keys()
    assert (device["name"], device["type"], device["index"]) == ("cpu", "cpu", None)
    assert device["vram_total"] == device["torch_vram_total"] == system["ram_total"]


def test_versions_come_from_installed_distributions():
    stats = sysinfo.system_stats(Settings(cpu=True), torch=None)["system"]
    assert stats["pytorch_version"] == sysinfo.package_version("torch")
    assert stats["pytorch_version"].startswith("2.")
    assert stats["installed_templates_version"] == sysinfo.package_version("comfyui-workflow-templates")
    assert sysinfo.package_version("surely-not-an-installed-distribution") is None


def test_argv_defaults_to_the_process_argv():
    assert sysinfo.system_stats(Settings(cpu=True), torch=None)["system"]["argv"] == sys.argv


def test_embedded_python_is_the_windows_portable_layout():
    assert sysinfo.is_embedded_python("C:/ComfyUI/python_embeded/python.exe")
    assert not sysinfo.is_embedded_python("/usr/bin/python3")


def test_cpu_flag_skips_torch():
    assert sysinfo.load_torch(cpu_only=True) is None


def test_missing_torch_means_cpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    assert sysinfo.load_torch(cpu_only=False) is None
    assert sysinfo.devices(None, cpu_only=False)[0]["type"] == "cpu"


def fake_cuda_torch() -> SimpleNamespace:
    gib = 1024**3
    cuda = SimpleNamespace(
        is_available=lambda: True,
        current_device=lambda: 0,
        memory_stats=lambda device: {"reserved_bytes.all.current": 2 * gib, "active_bytes.all.current": gib},
        mem_get_info=lambda device: (60 * gib, 80 * gib),
        get_allocator_backend=lambda: "native",
        get_device_name=lambda device: "NVIDIA H100 80GB HBM3",
    )
    return SimpleNamespace(cuda=cuda, device=lambda kind, index: f"{kind}:{index}", backends=SimpleNamespace())


def test_cuda_device_reports_driver_and_allocator_memory():
    gib = 1024**3
    [device] = sysinfo.devices(fake_cuda_torch(), cpu_only=False)
    assert device == {
        "name": "cuda:0 NVIDIA H100 80GB HBM3 : native",
        "type": "cuda",
        "index": 0,
        "vram_total": 80 * gib,
        "vram_free": 61 * gib,  # free on the card + reserved by torch but not in use
        "torch_vram_total": 2 * gib,
        "torch_vram_free": gib,
    }


def test_cpu_flag_wins_over_an_available_gpu():
    assert sysinfo.devices(fake_cuda_torch(), cpu_only=True)[0]["type"] == "cpu"


def test_real_torch_reports_this_machines_device():
    torch = sysinfo.load_torch(cpu_only=False)
    assert torch is not None
    [device] = sysinfo.devices(torch, cpu_only=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert device["type"] == expected
    assert device["vram_total"] > 0 and 0 <= device["vram_free"] <= device["vram_total"] + device["torch_vram_total"]
