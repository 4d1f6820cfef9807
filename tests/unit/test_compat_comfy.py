"""`comfy.utils`, `comfy.model_management`, `comfy.comfy_types` for custom nodes."""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import pytest
import torch
from PIL import Image

from comfyserve.compat.comfy import cli_args, model_management, utils
from comfyserve.compat.comfy.comfy_types import IO, CheckLazyMixin, ComfyNodeABC, InputTypeDict
from comfyserve.engine import interrupt, progress
from tests.unit.compat_fixtures import folders  # noqa: F401 - fixture


class Recorder:
    """A progress reporter's sinks: every event and preview, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.previews: list[tuple[str, tuple[str, bytes], bool]] = []

    def send(self, event: str, data: dict[str, Any]) -> None:
        self.events.append((event, data))

    def preview(self, node_id: str, preview: tuple[str, bytes], before: bool) -> None:
        self.previews.append((node_id, preview, before))

    def progress(self) -> list[tuple[float, float, str]]:
        return [(d["value"], d["max"], d["node"]) for e, d in self.events if e == "progress"]


@pytest.fixture
def reporting() -> Recorder:
    recorder = Recorder()
    state = progress.ProgressState("p1", recorder.send)
    progress.set_current(progress.ProgressReporter("p1", "7", state, recorder.send, recorder.preview))
    yield recorder
    progress.set_current(None)


# -- ProgressBar -----------------------------------------------------------------------------


def test_progress_bar_reports_for_the_running_node(reporting: Recorder):
    bar = utils.ProgressBar(4)
    bar.update(1)
    bar.update(2)
    bar.update_absolute(10)  # capped at the total
    bar.update_absolute(1, total=2)
    assert reporting.progress() == [(1, 4, "7"), (3, 4, "7"), (4, 4, "7"), (1, 2, "7")]
    assert bar.current == 1 and bar.total == 2
    # progress_state follows every progress event.
    kinds = [e for e, _ in reporting.events]
    assert kinds == ["progress", "progress_state"] * 4


def test_progress_bar_for_another_node_and_with_a_preview(reporting: Recorder):
    utils.ProgressBar(2, node_id="9").update(1)
    assert reporting.progress() == [(1, 2, "9")]
    assert progress.current().node_id == "7"  # the running node's reporter is untouched
    image = Image.new("RGB", (64, 32), "red")
    utils.ProgressBar(2).update_absolute(1, preview=("JPEG", image, 16))
    (node, (media, data), _), _ = reporting.previews
    assert (node, media) == ("7", "image/jpeg")
    assert Image.open(io.BytesIO(data)).size == (16, 8)


def test_progress_bar_outside_execution_is_silent():
    assert progress.current() is None
    utils.ProgressBar(3).update(1)  # no error, nothing to report to


def test_progress_bar_global_hook(reporting: Recorder):
    calls = []
    utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append((value, total)))
    try:
        utils.ProgressBar(5).update(2)
    finally:
        utils.set_progress_bar_global_hook(None)
    assert calls == [(2, 5)]
    assert reporting.progress() == []


def test_common_upscale_and_load_torch_file(tmp_path):
    samples = torch.rand(1, 3, 8, 12)
    assert utils.common_upscale(samples, 6, 4, "bilinear", "disabled").shape == (1, 3, 4, 6)
    assert utils.common_upscale(samples, 8, 8, "nearest-exact", "center").shape == (1, 3, 8, 8)
    assert utils.common_upscale(samples, 5, 5, "lanczos", "disabled").shape == (1, 3, 5, 5)
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(tmp_path / "m.safetensors"), metadata={"k": "v"})
    state, meta = utils.load_torch_file(str(tmp_path / "m.safetensors"), return_metadata=True)
    assert torch.equal(state["w"], torch.ones(2)) and meta == {"k": "v"}
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "m.ckpt")
    assert set(utils.load_torch_file(str(tmp_path / "m.ckpt"))) == {"w"}


# -- model_management ------------------------------------------------------------------------


@pytest.fixture
def flag():
    event = threading.Event()
    interrupt.use_flag(event)
    yield event
    interrupt.use_flag(threading.Event())


def test_interrupt_functions_are_the_engines(flag: threading.Event):
    assert model_management.InterruptProcessingException is interrupt.InterruptProcessingException
    assert not model_management.processing_interrupted()
    model_management.throw_exception_if_processing_interrupted()  # nothing pending
    model_management.interrupt_current_processing()
    assert flag.is_set() and model_management.processing_interrupted()
    with pytest.raises(interrupt.InterruptProcessingException):
        model_management.throw_exception_if_processing_interrupted()
    assert not flag.is_set()  # consumed
    model_management.interrupt_current_processing(True)
    model_management.interrupt_current_processing(False)
    assert not flag.is_set()


def test_devices_follow_the_cpu_setting(folders, monkeypatch):  # noqa: F811
    # The fixture's settings say --cpu: everything on the CPU whatever torch sees.
    assert model_management.get_torch_device() == torch.device("cpu")
    assert model_management.cpu_mode()
    assert model_management.cpu_state is model_management.CPUState.CPU
    assert model_management.intermediate_device() == torch.device("cpu")
    assert model_management.unet_offload_device() == torch.device("cpu")
    assert model_management.is_device_cpu(model_management.get_torch_device())
    assert model_management.get_free_memory() > 0
    assert model_management.get_total_memory() >= model_management.get_free_memory()
    model_management.soft_empty_cache()
    # Without --cpu, CUDA when torch has it (the capability probe stands in for a GPU).
    from comfyserve import runtime
    from comfyserve.models import devices

    ampere = devices.DeviceCapability("cuda", 0, "NVIDIA A10", 8, 6, total_memory=24 << 30)
    monkeypatch.setattr(devices, "probe_capability", lambda cpu=False: devices.DeviceCapability() if cpu else ampere)
    monkeypatch.setattr(runtime.settings(), "cpu", False)
    assert model_management.get_torch_device() == torch.device("cuda", 0)
    assert not model_management.cpu_mode() and model_management.is_nvidia()
    assert model_management.vram_state is model_management.VRAMState.NORMAL_VRAM
    assert model_management.intermediate_device() == torch.device("cpu")
    assert model_management.unet_offload_device() == torch.device("cpu")
    assert model_management.unet_dtype() == torch.float16 and model_management.vae_dtype() == torch.bfloat16
    assert model_management.should_use_bf16() and not model_management.should_use_fp16(torch.device("cpu"))
    monkeypatch.setattr(runtime.settings(), "argv", ["main.py", "--highvram", "--fp32-vae"])
    assert model_management.vram_state is model_management.VRAMState.HIGH_VRAM
    assert model_management.unet_offload_device() == torch.device("cuda", 0)
    assert model_management.vae_dtype() == torch.float32


# -- comfy_types -----------------------------------------------------------------------------


def test_io_names_behave_as_comfyuis():
    assert IO.IMAGE == "IMAGE" and str(IO.IMAGE) == "IMAGE"
    assert json.dumps([IO.INT, IO.ANY]) == '["INT", "*"]'
    assert {"IMAGE": 1}[IO.IMAGE] == 1 and {"*": 2}[IO.ANY] == 2
    # `!=` knows the wildcard and unions.
    assert not (IO.ANY != "LATENT")
    assert not (IO.NUMBER != "INT")
    assert IO.IMAGE != "MASK"
    assert IO.IMAGE != 3


def test_typing_helpers():
    class Node(ComfyNodeABC, CheckLazyMixin):
        @classmethod
        def INPUT_TYPES(cls) -> InputTypeDict:
            return {"required": {"a": (IO.INT, {"default": 1})}}

        RETURN_TYPES = (IO.INT,)
        FUNCTION = "run"

    assert Node.INPUT_TYPES()["required"]["a"][0] == "INT"
    assert Node().check_lazy_status(a=None, b=2) == ["a"]
    from comfyserve.compat.comfy.comfy_types import node_typing

    assert node_typing.IO is IO


# -- cli_args --------------------------------------------------------------------------------


def test_cli_args_are_the_servers_command_line(folders, monkeypatch):  # noqa: F811
    from comfyserve import runtime

    argv = ["main.py", "--port", "9001", "--disable-metadata", "--preview-method", "latent2rgb"]
    monkeypatch.setattr(runtime.settings(), "argv", argv)
    args = cli_args.parse_server_args()
    assert args.port == 9001 and args.disable_metadata is True
    assert args.preview_method is cli_args.LatentPreviewMethod.Latent2RGB
    monkeypatch.setattr(runtime.settings(), "argv", ["main.py"])
    assert cli_args.parse_server_args().preview_method is cli_args.LatentPreviewMethod.NoPreviews
