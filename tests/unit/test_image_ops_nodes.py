"""Image operation nodes: /object_info entries equal ComfyUI 0.8's; values worked out by hand from its formulas."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import nodes
from comfyserve.engine.registry import NodeRegistry
from nodes.image_loaders import LoadImageOutput
from nodes.image_ops import (
    ImageBatch,
    ImageBlend,
    ImageBlur,
    ImageCompositeMasked,
    ImageCrop,
    ImageFromBatch,
    ImagePadForOutpaint,
    ImageQuantize,
    ImageSharpen,
    RebatchImages,
    RepeatImageBatch,
    _bayer_matrix,
    repeat_to_batch_size,
)
from tests.conftest import reference
from tests.unit.test_image_nodes import folders  # noqa: F401  (fixture)

IMAGE_OP_NODES = [
    "ImagePadForOutpaint", "ImageBatch", "ImageCrop", "RepeatImageBatch", "ImageFromBatch", "RebatchImages",
    "ImageBlend", "ImageBlur", "ImageSharpen", "ImageQuantize", "ImageCompositeMasked", "LoadImageOutput",
]


def pixel(*values: float) -> torch.Tensor:
    """A 1×1 image holding one colour."""
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, -1)


def ramp(batch=1, height=4, width=5, channels=1) -> torch.Tensor:
    count = batch * height * width * channels
    return torch.arange(count, dtype=torch.float32).reshape(batch, height, width, channels) / count


def test_object_info_entries_equal_comfyui(folders):  # noqa: F811
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    expected = reference("object_info_full.json")["body"]
    for class_type in IMAGE_OP_NODES:
        assert json.loads(json.dumps(registry.node_info(class_type))) == expected[class_type], class_type


# -- ImagePadForOutpaint -------------------------------------------------------------------
def test_pad_fills_grey_and_feathers_only_towards_padded_sides():
    image = torch.full((1, 6, 6, 3), 0.2)
    padded, mask = ImagePadForOutpaint().expand_image(image, left=2, top=0, right=0, bottom=1, feathering=2)
    assert padded.shape == (1, 7, 8, 3) and mask.shape == (1, 7, 8)
    assert torch.all(padded[0, :, :2] == 0.5) and torch.all(padded[0, 6] == 0.5)
    assert torch.all(padded[0, :6, 2:] == 0.2)
    # Inside: distance d to the left (column) or bottom (6 − row) edge; ((2 − d) / 2)² where d < 2.
    inner = torch.zeros((6, 6))
    inner[:, 0], inner[:, 1], inner[5, 1:] = 1.0, 0.25, 0.25
    expected = torch.ones((7, 8))
    expected[:6, 2:] = inner
    assert torch.equal(mask[0], expected)


def test_pad_without_feathering_room_leaves_the_original_unmasked():
    _, mask = ImagePadForOutpaint().expand_image(torch.zeros((1, 4, 4, 3)), 8, 8, 8, 8, feathering=2)
    assert mask.shape == (1, 20, 20)
    assert not mask[0, 8:12, 8:12].any() and mask.sum() == 20 * 20 - 16


# -- crop / batch --------------------------------------------------------------------------
def test_crop_starts_inside_the_image_and_stops_at_its_edge():
    image = ramp()
    (out,) = ImageCrop().crop(image, width=2, height=3, x=4, y=1)
    assert torch.equal(out, image[:, 1:4, 4:5])
    (beyond,) = ImageCrop().crop(image, width=512, height=512, x=100, y=100)
    assert torch.equal(beyond, image[:, 3:, 4:])


def test_repeat_cycles_the_whole_batch():
    image = ramp(batch=2)
    (out,) = RepeatImageBatch().repeat(image, 3)
    assert out.shape[0] == 6 and torch.equal(out[4], image[0]) and torch.equal(out[3], image[1])


def test_from_batch_clamps_index_and_length():
    image = ramp(batch=4)
    assert torch.equal(ImageFromBatch().frombatch(image, 1, 2)[0], image[1:3])
    assert torch.equal(ImageFromBatch().frombatch(image, 10, 3)[0], image[3:])


def test_rebatch_regroups_all_images_in_order():
    first, second = ramp(batch=3), ramp(batch=2) + 1
    (groups,) = RebatchImages().rebatch([first, second], [2])
    assert [g.shape[0] for g in groups] == [2, 2, 1]
    assert torch.equal(torch.cat(groups), torch.cat([first, second]))
    assert RebatchImages.INPUT_IS_LIST and RebatchImages.OUTPUT_IS_LIST == (True,)


def test_image_batch_gives_the_image_without_alpha_an_opaque_one():
    rgba = torch.full((1, 2, 2, 4), 0.5)
    (out,) = ImageBatch().batch(rgba, torch.zeros((1, 2, 2, 3)))
    assert out.shape == (2, 2, 2, 4)
    assert torch.all(out[1, ..., 3] == 1.0) and torch.all(out[1, ..., :3] == 0.0)


def test_image_batch_resizes_the_second_image_to_the_first():
    (out,) = ImageBatch().batch(torch.zeros((1, 2, 3, 3)), torch.full((2, 5, 5, 3), 0.3))
    assert out.shape == (3, 2, 3, 3) and torch.allclose(out[1:], torch.tensor(0.3))


def test_repeat_to_batch_size_cuts_or_cycles():
    items = torch.arange(3.0)
    assert repeat_to_batch_size(items, 2).tolist() == [0.0, 1.0]
    assert repeat_to_batch_size(items, 7).tolist() == [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0]


# -- ImageBlend ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "base", "top", "expected"),
    [
        ("normal", 0.2, 0.6, 0.6),
        ("multiply", 0.2, 0.6, 0.12),
        ("screen", 0.2, 0.6, 1 - 0.8 * 0.4),
        ("overlay", 0.2, 0.6, 2 * 0.2 * 0.6),
        ("overlay", 0.8, 0.6, 1 - 2 * 0.2 * 0.4),
        # soft light, top > 0.5 and base ≤ 0.25: D(0.2) = ((16·0.2 − 12)·0.2 + 4)·0.2 = 0.448
        ("soft_light", 0.2, 0.6, 0.2 + 0.2 * (0.448 - 0.2)),
        ("soft_light", 0.64, 0.75, 0.64 + 0.5 * (0.8 - 0.64)),  # D(0.64) = √0.64
        ("soft_light", 0.2, 0.4, 0.2 - 0.2 * 0.2 * 0.8),
        ("difference", 0.6, 0.2, 0.4),
        ("difference", 0.2, 0.6, 0.0),  # negative, clamped
    ],
)
def test_blend_modes_at_full_strength(mode, base, top, expected):
    (out,) = ImageBlend().blend_images(pixel(base), pixel(top), 1.0, mode)
    assert out.item() == pytest.approx(expected, abs=1e-6)


def test_blend_factor_mixes_the_blend_with_the_first_image():
    (out,) = ImageBlend().blend_images(pixel(0.2), pixel(0.6), 0.25, "multiply")
    assert out.item() == pytest.approx(0.75 * 0.2 + 0.25 * 0.12)


def test_blend_resizes_the_second_image_and_matches_channels():
    image1 = torch.full((1, 4, 6, 3), 0.5)
    (out,) = ImageBlend().blend_images(image1, torch.full((1, 2, 2, 4), 0.5), 0.5, "normal")
    assert out.shape == (1, 4, 6, 3) and torch.allclose(out, torch.tensor(0.5))


# -- blur / sharpen ------------------------------------------------------------------------
E1, E2 = math.exp(-0.5), math.exp(-1.0)
KERNEL_SUM = 1 + 4 * E1 + 4 * E2  # radius 1, sigma 1: distances 0, 1 (edges), √2 (corners) on [-1, 1]²


def spot(size: int, row: int, col: int, value: float = 1.0, background: float = 0.0) -> torch.Tensor:
    image = torch.full((1, size, size, 1), background)
    image[0, row, col, 0] = value
    return image


def test_blur_spreads_a_spot_by_the_normalised_gaussian():
    (out,) = ImageBlur().blur(spot(5, 2, 2), 1, 1.0)
    assert out.shape == (1, 5, 5, 1)
    assert out[0, 2, 2, 0].item() == pytest.approx(1 / KERNEL_SUM, rel=1e-5)
    assert out[0, 2, 3, 0].item() == pytest.approx(E1 / KERNEL_SUM, rel=1e-5)
    assert out[0, 1, 1, 0].item() == pytest.approx(E2 / KERNEL_SUM, rel=1e-5)
    assert out[0, 0, 0, 0].item() == 0.0
    assert out.sum().item() == pytest.approx(1.0, rel=1e-5)


def test_blur_mirrors_the_edges():
    # The left neighbour of column 0 is column 1 (reflection), so the spot counts twice there.
    (out,) = ImageBlur().blur(spot(3, 1, 1), 1, 1.0)
    assert out[0, 1, 0, 0].item() == pytest.approx(2 * E1 / KERNEL_SUM, rel=1e-5)
    assert out[0, 0, 0, 0].item() == pytest.approx(4 * E2 / KERNEL_SUM, rel=1e-5)


def test_sharpen_boosts_the_centre_and_keeps_flat_areas():
    alpha = 0.01  # kernel −10·alpha·g, centre raised by 1 + 10·alpha
    (out,) = ImageSharpen().sharpen(spot(5, 2, 2, value=0.6, background=0.5), 1, 1.0, alpha)
    boost = 10 * alpha
    assert out[0, 2, 2, 0].item() == pytest.approx(0.5 + 0.1 * (1 + boost - boost / KERNEL_SUM), rel=1e-5)
    assert out[0, 2, 3, 0].item() == pytest.approx(0.5 - 0.1 * boost * E1 / KERNEL_SUM, rel=1e-5)
    assert out[0, 0, 0, 0].item() == pytest.approx(0.5, rel=1e-5)


def test_sharpen_clamps_to_the_unit_range():
    (out,) = ImageSharpen().sharpen(spot(5, 2, 2, value=1.0), 2, 1.0, 5.0)
    assert out.min() == 0.0 and out.max() == 1.0


# -- ImageQuantize -------------------------------------------------------------------------
def test_bayer_matrices_are_comfyuis_recursion():
    assert np.allclose(_bayer_matrix(2), [[-0.375, 0.125], [0.375, -0.125]])
    four = _bayer_matrix(4)
    assert four.shape == (4, 4)
    assert four[0, 0] == pytest.approx((16 * -0.375 - 1.5) / 16)
    assert four[3, 3] == pytest.approx((16 * -0.125 - 0.5) / 16)
    assert sorted((four * 16 + 7.5).round().astype(int).ravel().tolist()) == list(range(16))


def test_quantize_keeps_an_image_with_few_colours_and_limits_others():
    colours = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (255, 255, 255)]
    pixels = np.array([colours * 2] * 4, dtype=np.uint8)  # 4×8, four colours
    image = torch.from_numpy(pixels.astype(np.float32) / 255).unsqueeze(0)
    (same,) = ImageQuantize().quantize(image, 4, "none")
    assert torch.equal(same, image)
    for dither in ["none", "floyd-steinberg", "bayer-2", "bayer-8"]:
        (two,) = ImageQuantize().quantize(image, 2, dither)
        assert two.shape == image.shape
        assert len(torch.unique(two.reshape(-1, 3), dim=0)) <= 2, dither


def test_quantize_keeps_alpha():
    image = torch.cat((torch.full((1, 2, 2, 3), 0.5), torch.full((1, 2, 2, 1), 0.25)), dim=-1)
    (out,) = ImageQuantize().quantize(image, 8, "none")
    assert out.shape == (1, 2, 2, 4) and torch.all(out[..., 3] == 0.25)
    assert torch.allclose(out[..., :3], torch.tensor(127 / 255))  # 0.5 truncated to 8 bits


# -- ImageCompositeMasked ------------------------------------------------------------------
def test_composite_pastes_at_xy_and_clips_at_the_edge():
    (out,) = ImageCompositeMasked().composite(torch.zeros((1, 4, 4, 3)), torch.ones((1, 2, 2, 3)), 3, 1, False)
    expected = torch.zeros((1, 4, 4, 3))
    expected[:, 1:3, 3:] = 1.0
    assert torch.equal(out, expected)


def test_composite_blends_through_the_mask():
    mask = torch.tensor([[[1.0, 0.5], [0.0, 0.25]]])
    (out,) = ImageCompositeMasked().composite(torch.zeros((1, 3, 3, 3)), torch.ones((1, 2, 2, 3)), 1, 1, False, mask)
    assert torch.equal(out[0, 1:, 1:, 0], mask[0])
    assert out[0, 0].sum() == 0 and out[0, :, 0].sum() == 0


def test_composite_resizes_source_repeats_batch_and_drops_extra_alpha():
    destination = torch.zeros((2, 3, 3, 3))
    source = torch.full((1, 1, 1, 4), 0.7)
    (out,) = ImageCompositeMasked().composite(destination, source, 0, 0, True)
    assert out.shape == (2, 3, 3, 3) and torch.allclose(out, torch.tensor(0.7))
    assert not destination.any()  # the input is left untouched


# -- LoadImageOutput -----------------------------------------------------------------------
def test_load_image_output_reads_annotated_output_files(folders):  # noqa: F811
    Image.new("RGB", (2, 1), (0, 0, 255)).save(folders.output / "gen.png")
    picture, mask = LoadImageOutput().load_image("gen.png [output]")
    assert picture[0, 0, 0].tolist() == [0.0, 0.0, 1.0] and mask.shape == (1, 64, 64)
    assert LoadImageOutput.VALIDATE_INPUTS("gen.png [output]") is True
    assert LoadImageOutput.VALIDATE_INPUTS("gen.png") == "Invalid image file: gen.png"  # plain = input folder
    kind, options = LoadImageOutput.INPUT_TYPES()["required"]["image"]
    assert kind == "COMBO" and options["remote"]["route"] == "/internal/files/output"
