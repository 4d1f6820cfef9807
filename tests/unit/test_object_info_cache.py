"""`/object_info` is served from cached bytes until a listed folder changes."""

from __future__ import annotations

import json
import os

from comfyserve.config import Settings
from comfyserve.engine.registry import NodeRegistry
from comfyserve.paths import Folders
from comfyserve.server.routes.info import listing_stamp


def make_registry(folders: Folders) -> NodeRegistry:
    class CheckpointPicker:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"ckpt_name": (folders.filename_list("checkpoints"),)}}

        RETURN_TYPES = ()
        FUNCTION = "run"

    class InputPicker:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"image": (sorted(os.listdir(folders.input)),)}}

        RETURN_TYPES = ()
        FUNCTION = "run"

    registry = NodeRegistry()
    registry.register_mappings({"CheckpointPicker": CheckpointPicker, "InputPicker": InputPicker})
    return registry


def choices(body: bytes, node: str, name: str) -> list[str]:
    return json.loads(body)[node]["input"]["required"][name][0]


def test_cached_until_a_model_or_input_file_appears(tmp_path):
    folders = Folders.from_settings(Settings(base_directory=tmp_path))
    folders.ensure()
    registry = make_registry(folders)

    def info() -> bytes:
        return registry.object_info_bytes(lambda: listing_stamp(folders))

    first = info()
    assert choices(first, "CheckpointPicker", "ckpt_name") == []
    assert info() is first  # nothing changed: the same cached bytes

    (tmp_path / "models" / "checkpoints" / "new.safetensors").write_bytes(b"0")
    second = info()
    assert choices(second, "CheckpointPicker", "ckpt_name") == ["new.safetensors"]

    (tmp_path / "input" / "photo.png").write_bytes(b"0")
    third = info()
    assert choices(third, "InputPicker", "image") == ["photo.png"]

    (tmp_path / "output" / "checkpoints").mkdir()
    (tmp_path / "output" / "checkpoints" / "saved.safetensors").write_bytes(b"0")
    assert choices(info(), "CheckpointPicker", "ckpt_name") == ["new.safetensors", "saved.safetensors"]


def test_stamp_covers_input_and_every_model_root(tmp_path):
    folders = Folders.from_settings(Settings(base_directory=tmp_path))
    stamped = {path for path, _ in listing_stamp(folders)}
    assert str(folders.input) in stamped
    assert str(tmp_path.resolve() / "models" / "unet") in stamped
    assert str(tmp_path.resolve() / "output" / "checkpoints") in stamped
    folders.add_model_path("checkpoints", tmp_path / "extra")
    assert str(tmp_path / "extra") in {path for path, _ in listing_stamp(folders)}


def test_object_info_is_built_once_the_nodes_are_loaded(tmp_path):
    import asyncio

    from comfyserve.cli import build_parser, settings_from_args
    from comfyserve.engine.loader import start_loading
    from comfyserve.server.app import create_app
    from comfyserve.server.context import CONTEXT

    settings = settings_from_args(build_parser().parse_args(
        ["--base-directory", str(tmp_path), "--disable-all-custom-nodes"]))
    app = create_app(settings)
    ctx = app[CONTEXT]

    async def load() -> None:
        await start_loading(ctx, app)

    try:
        asyncio.run(load())
        cached = ctx.registry._info_cache
        assert cached is not None and cached[0] == listing_stamp(ctx.folders)
        assert "KSampler" in json.loads(cached[1])
    finally:
        ctx.queue.stop_worker()
        ctx.queue.store.close()
