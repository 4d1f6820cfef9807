"""The text nodes on tiny random encoders: ComfyUI's CONDITIONING shapes and option keys."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from nodes.text import CLIPSetLastLayer, CLIPTextEncode, CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner
from tests.text.tiny import G_PROJ, G_WIDTH, L_WIDTH, PROMPT, close


def test_sdxl_node_pads_the_shorter_prompt_with_empty_chunks(sdxl):
    (conditioning,) = CLIPTextEncodeSDXL().execute(sdxl, 832, 1216, 16, 32, 1024, 2048, "a cat", "dog " * 100)
    [[cond, extra]] = conditioning
    assert cond.shape == (1, 154, L_WIDTH + G_WIDTH)
    assert set(extra) == {"pooled_output", "width", "height", "crop_w", "crop_h", "target_width", "target_height"}
    assert (extra["width"], extra["height"], extra["crop_w"], extra["crop_h"]) == (832, 1216, 16, 32)
    assert (extra["target_width"], extra["target_height"]) == (1024, 2048)
    assert extra["pooled_output"].shape == (1, G_PROJ)
    empty_g = sdxl.encode_from_tokens(sdxl.tokenize(""))[..., L_WIDTH:]
    assert close(cond[:, 77:, L_WIDTH:], empty_g)  # clip-g's second chunk is the empty prompt


def test_refiner_node_keys(refiner):
    (conditioning,) = CLIPTextEncodeSDXLRefiner().execute(refiner, 2.5, 768, 512, "a cat")
    [[cond, extra]] = conditioning
    assert cond.shape == (1, 77, G_WIDTH)
    assert set(extra) == {"pooled_output", "aesthetic_score", "width", "height"}
    assert (extra["aesthetic_score"], extra["width"], extra["height"]) == (2.5, 768, 512)


def test_clip_text_encode_node(sd1):
    (conditioning,) = CLIPTextEncode().encode(sd1, PROMPT)
    [[cond, extra]] = conditioning
    assert cond.shape == (1, 77, L_WIDTH) and set(extra) == {"pooled_output"}
    assert torch.equal(cond, sd1.encode_from_tokens(sd1.tokenize(PROMPT)))
    with pytest.raises(RuntimeError, match="clip input is invalid"):
        CLIPTextEncode().encode(None, PROMPT)


def test_clip_set_last_layer_node_clones(sd1):
    (clip,) = CLIPSetLastLayer().set_last_layer(sd1, -2)
    assert clip is not sd1 and clip.layer_idx == -2 and sd1.layer_idx is None


def test_importing_the_text_package_and_nodes_does_not_import_transformers():
    code = "import sys, comfyserve.text, nodes.text; assert 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
