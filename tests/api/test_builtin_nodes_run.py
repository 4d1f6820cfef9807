"""Black-box: prompts chaining the model-free built-in nodes run on a real server.

Pixel values are worked out by hand: EmptyImage colours, a 50 % SolidMask composite, crop,
outpaint padding (grey 0.5), mask conversion, growth and threshold; saved PNGs hold
`int(255 · x)`. Text nodes are checked through PreviewAny's history output.
"""

from __future__ import annotations

import io
import urllib.parse

import numpy as np
from PIL import Image

from tests.api.client import get, post, wait_history

RED, BLUE, GREEN = 0xFF0000, 0x0000FF, 0x00FF00
HALF = 127  # int(255 * 0.5)


def run(base: str, prompt: dict) -> dict:
    reply = post(base, "/prompt", {"prompt": prompt})
    assert reply.status == 200, reply.body
    entry = wait_history(base, reply.json()["prompt_id"])
    assert entry["status"]["status_str"] == "success", entry["status"]
    return entry["outputs"]


def pixels(base: str, ref: dict) -> np.ndarray:
    reply = get(base, "/view?" + urllib.parse.urlencode(ref))
    assert reply.status == 200, ref
    return np.array(Image.open(io.BytesIO(reply.body)).convert("RGB"))


def empty(width: int, height: int, color: int, batch: int = 1) -> dict:
    return {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": batch, "color": color}}


def save(images: list, prefix: str) -> dict:
    return {"class_type": "SaveImage", "inputs": {"images": images, "filename_prefix": prefix}}


def test_composite_crop_pad_and_mask_chain_saves_the_expected_pixels(server):
    prompt = {
        "1": empty(8, 8, RED),
        "2": empty(4, 4, BLUE),
        "3": {"class_type": "SolidMask", "inputs": {"value": 0.5, "width": 4, "height": 4}},
        "4": {"class_type": "ImageCompositeMasked", "inputs": {
            "destination": ["1", 0], "source": ["2", 0], "x": 4, "y": 0, "resize_source": False, "mask": ["3", 0]}},
        "5": {"class_type": "ImageCrop", "inputs": {"image": ["4", 0], "width": 6, "height": 4, "x": 2, "y": 0}},
        "6": {"class_type": "ImagePadForOutpaint", "inputs": {
            "image": ["5", 0], "left": 0, "top": 0, "right": 0, "bottom": 8, "feathering": 40}},
        "7": save(["6", 0], "ops"),
        "8": {"class_type": "MaskToImage", "inputs": {"mask": ["6", 1]}},
        "9": save(["8", 0], "padmask"),
        "10": {"class_type": "ImageToMask", "inputs": {"image": ["4", 0], "channel": "blue"}},
        "11": {"class_type": "GrowMask", "inputs": {"mask": ["10", 0], "expand": 1, "tapered_corners": False}},
        "12": {"class_type": "ThresholdMask", "inputs": {"mask": ["11", 0], "value": 0.25}},
        "13": {"class_type": "MaskToImage", "inputs": {"mask": ["12", 0]}},
        "14": save(["13", 0], "grown"),
    }
    outputs = run(server.url, prompt)

    ops = pixels(server.url, outputs["7"]["images"][0])
    assert ops.shape == (12, 6, 3)
    assert (ops[:4, :2] == [255, 0, 0]).all()  # red destination left of the pasted square
    assert (ops[:4, 2:] == [HALF, 0, HALF]).all()  # half blue over red
    assert (ops[4:] == HALF).all()  # outpaint border

    padmask = pixels(server.url, outputs["9"]["images"][0])
    assert (padmask[:4] == 0).all() and (padmask[4:] == 255).all()  # no room to feather: hard edge

    grown = pixels(server.url, outputs["14"]["images"][0])[..., 0]
    expected = np.zeros((8, 8), dtype=np.uint8)
    expected[0:5, 3:8] = 255  # the 4×4 square at x=4, grown by one pixel each way (square footprint)
    assert (grown == expected).all()


def test_rebatched_images_are_saved_one_list_item_at_a_time(server):
    prompt = {
        "1": empty(2, 2, GREEN, batch=3),
        "2": {"class_type": "RebatchImages", "inputs": {"images": ["1", 0], "batch_size": 2}},
        "3": save(["2", 0], "rebatch"),
    }
    images = run(server.url, prompt)["3"]["images"]
    assert [ref["filename"] for ref in images] == ["rebatch_00001_.png", "rebatch_00002_.png", "rebatch_00003_.png"]
    for ref in images:
        assert (pixels(server.url, ref) == [0, 255, 0]).all()


def test_string_and_primitive_nodes_show_through_preview_any(server):
    prompt = {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "hello"}},
        "2": {"class_type": "StringConcatenate", "inputs": {"string_a": ["1", 0], "string_b": "World", "delimiter": " "}},
        "3": {"class_type": "CaseConverter", "inputs": {"string": ["2", 0], "mode": "UPPERCASE"}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
        "5": {"class_type": "StringLength", "inputs": {"string": ["2", 0]}},
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}},
        "7": {"class_type": "RegexReplace", "inputs": {
            "string": ["2", 0], "regex_pattern": "o", "replace": "0", "count": 1}},
        "8": {"class_type": "PreviewAny", "inputs": {"source": ["7", 0]}},
        "9": {"class_type": "PrimitiveBoolean", "inputs": {"value": True}},
        "10": {"class_type": "PreviewAny", "inputs": {"source": ["9", 0]}},
        "11": {"class_type": "StringContains", "inputs": {"string": ["3", 0], "substring": "world", "case_sensitive": False}},
        "12": {"class_type": "PreviewAny", "inputs": {"source": ["11", 0]}},
    }
    outputs = run(server.url, prompt)
    assert outputs["4"] == {"text": ["HELLO WORLD"]}
    assert outputs["6"] == {"text": ["11"]}
    assert outputs["8"] == {"text": ["hell0 World"]}
    assert outputs["10"] == {"text": ["True"]}
    assert outputs["12"] == {"text": ["True"]}


def test_object_info_lists_the_new_nodes_like_comfyui(server):
    info = get(server.url, "/object_info/PrimitiveInt").json()["PrimitiveInt"]
    assert info["python_module"] == "comfy_extras.nodes_primitive" and info["output_matchtypes"] is None
    assert get(server.url, "/object_info/ImageBlur").json()["ImageBlur"]["display_name"] is None
