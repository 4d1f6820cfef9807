"""Black-box: images saved by a real server carry ComfyUI's names and PNG chunks.

Replays the captured SaveImage/PreviewImage prompts in order on a fresh server and compares
history outputs and every chunk of each file (downloaded through `/view`) with ComfyUI's.
"""

import re
import time
import urllib.parse

import numpy as np
from PIL import Image

from tests.api.client import get, post, wait_history
from tests.conftest import reference
from tests.unit.test_image_nodes import png_chunks

OUTSIDE_OUTPUT = "Saving image outside the output folder is not allowed"
TEMP_NAME = re.compile(r"ComfyUI_temp_[a-z]{5}_00001_\.png")


def run(base: str, body: dict) -> dict:
    """POST a prompt and wait for its history entry."""
    reply = post(base, "/prompt", body)
    assert reply.status == 200, reply.body
    return wait_history(base, reply.json()["prompt_id"])


def download(base: str, ref: dict) -> bytes:
    reply = get(base, "/view?" + urllib.parse.urlencode(ref))
    assert reply.status == 200, (ref, reply.status)
    return reply.body


def expected_outputs(record: dict, got: dict) -> dict:
    """The captured outputs with the parts that differ by run (random temp name, year) taken from `got`."""
    year = str(time.localtime().tm_year)
    outputs = {}
    for node, ui in record["history_outputs"].items():
        images = []
        for index, ref in enumerate(ui["images"]):
            ref = {**ref, "filename": ref["filename"].replace("2026", year)}
            if ref["type"] == "temp":
                actual = got[node]["images"][index]["filename"]
                assert TEMP_NAME.fullmatch(actual), actual
                ref["filename"] = actual
            images.append(ref)
        outputs[node] = {"images": images}
    return outputs


def test_saved_files_match_comfyui(server):
    for case, record in reference("png_metadata_and_filenames.json").items():
        if not isinstance(record, dict):
            continue
        if "num_00010_" in case:
            (server.base / "output" / "num_00010_.png").write_bytes(b"added by hand")
        entry = run(server.url, record["request_body"])
        assert entry["status"]["status_str"] == record["status"], case
        if record["status"] == "error":
            kind, data = entry["status"]["messages"][-1]
            assert kind == "execution_error"
            assert (data["node_id"], data["node_type"], data["exception_type"]) == ("3", "SaveImage", "Exception")
            assert OUTSIDE_OUTPUT in data["exception_message"]
            assert entry["outputs"] == {}
            assert not list(server.base.glob("escape*"))
            continue
        assert entry["outputs"] == expected_outputs(record, entry["outputs"]), case
        saved = [image for ui in entry["outputs"].values() for image in ui["images"]]
        for ref, expected in zip(saved, record["files"], strict=True):
            assert png_chunks(download(server.url, ref)) == expected["png_chunks"], case


def test_prompt_chunk_is_the_submitted_prompt_and_workflow_is_kept(server):
    prompt = {
        "5": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 2, "batch_size": 2, "color": 0x00FF00}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "bb/shot"}},
    }
    workflow = {"last_node_id": 6, "nodes": [{"id": 5, "type": "EmptyImage"}], "extra": {"ds": {"scale": 1.5}}}
    entry = run(server.url, {"prompt": prompt, "extra_data": {"extra_pnginfo": {"workflow": workflow}}})
    refs = entry["outputs"]["6"]["images"]
    assert refs == [
        {"filename": "shot_00001_.png", "subfolder": "bb", "type": "output"},
        {"filename": "shot_00002_.png", "subfolder": "bb", "type": "output"},
    ]
    for ref in refs:
        picture = Image.open(server.base / "output" / "bb" / ref["filename"])
        assert picture.text == {
            "prompt": '{"5": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 2, "batch_size": 2, '
            '"color": 65280}}, "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], '
            '"filename_prefix": "bb/shot"}}}',
            "workflow": '{"last_node_id": 6, "nodes": [{"id": 5, "type": "EmptyImage"}], "extra": {"ds": {"scale": 1.5}}}',
        }
        assert picture.size == (4, 2) and picture.getpixel((3, 1)) == (0, 255, 0)


def test_load_image_from_input_saves_the_same_pixels(server):
    pixels = np.random.default_rng(7).integers(0, 256, (5, 6, 4), dtype=np.uint8)
    Image.fromarray(pixels).save(server.base / "input" / "source.png")
    info = get(server.url, "/object_info/LoadImage").json()
    assert "source.png" in info["LoadImage"]["input"]["required"]["image"][0]
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "source.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "copy"}},
    }
    entry = run(server.url, {"prompt": prompt})
    (ref,) = entry["outputs"]["2"]["images"]
    saved = np.array(Image.open(server.base / "output" / ref["filename"]))
    assert saved.shape == (5, 6, 3)
    assert np.array_equal(saved, pixels[..., :3])


def test_disable_metadata_saves_bare_pngs(make_server):
    bare = make_server("--disable-metadata")
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 501}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bare"}},
    }
    entry = run(bare.url, {"prompt": prompt, "extra_data": {"extra_pnginfo": {"workflow": {"nodes": []}}}})
    (ref,) = entry["outputs"]["2"]["images"]
    assert ref == {"filename": "bare_00001_.png", "subfolder": "", "type": "output"}
    assert [chunk["type"] for chunk in png_chunks(download(bare.url, ref))] == ["IHDR", "IDAT", "IEND"]
