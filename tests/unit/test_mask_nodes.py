"""Mask nodes and LoadImageMask: /object_info entries equal ComfyUI 0.8's; values worked out by hand."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

import nodes
from comfyserve.engine.registry import NodeRegistry
from nodes.image_loaders import LoadImageMask
from nodes.mask import (
    CropMask,
    FeatherMask,
    GrowMask,
    ImageToMask,
    InvertMask,
    JoinImageWithAlpha,
    MaskComposite,
    MaskToImage,
    SolidMask,
    SplitImageWithAlpha,
    ThresholdMask,
)
from tests.conftest import reference
from tests.unit.test_image_nodes import folders  # noqa: F401  (fixture)

MASK_NODES = [
    "MaskToImage", "ImageToMask", "SolidMask", "InvertMask", "CropMask", "MaskComposite", "FeatherMask",
    "GrowMask", "ThresholdMask", "SplitImageWithAlpha", "JoinImageWithAlpha", "LoadImageMask",
]


def mask(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_object_info_entries_equal_comfyui(folders):  # noqa: F811
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    expected = reference("object_info_full.json")["body"]
    for class_type in MASK_NODES:
        assert json.loads(json.dumps(registry.node_info(class_type))) == expected[class_type], class_type
    alone = reference("object_info_misc.json")["GET /object_info/LoadImageMask"]["response"]["body"]["json"]
    assert json.loads(json.dumps(registry.node_info("LoadImageMask"))) == alone["LoadImageMask"]


# -- conversions ---------------------------------------------------------------------------
def test_mask_to_image_repeats_the_mask_in_three_channels():
    (out,) = MaskToImage().mask_to_image(mask([[0.0, 0.5], [1.0, 0.25]]))
    assert out.shape == (1, 2, 2, 3)
    assert torch.equal(out[0, :, :, 1], mask([[0.0, 0.5], [1.0, 0.25]]))
    assert torch.equal(out[..., 0], out[..., 2])


def test_image_to_mask_takes_one_channel_of_every_item():
    image = torch.arange(2 * 1 * 2 * 4, dtype=torch.float32).reshape(2, 1, 2, 4)
    (green,) = ImageToMask().image_to_mask(image, "green")
    (alpha,) = ImageToMask().image_to_mask(image, "alpha")
    assert green.shape == (2, 1, 2) and torch.equal(green, image[..., 1]) and torch.equal(alpha, image[..., 3])


def test_solid_and_invert():
    (solid,) = SolidMask().solid(0.25, width=3, height=2)
    assert solid.shape == (1, 2, 3) and torch.all(solid == 0.25)
    assert torch.all(InvertMask().invert(solid)[0] == 0.75)


def test_crop_batches_a_single_mask():
    source = torch.arange(20, dtype=torch.float32).reshape(4, 5)
    (out,) = CropMask().crop(source, x=3, y=1, width=10, height=2)
    assert out.shape == (1, 2, 2) and torch.equal(out[0], source[1:3, 3:])


# -- MaskComposite -------------------------------------------------------------------------
DEST = [[0.2, 0.6], [0.9, 0.4]]


@pytest.mark.parametrize(
    ("operation", "value"),
    [
        ("multiply", 0.3),
        ("add", 1.0),  # 1.1, clamped
        ("subtract", 0.1),
        ("and", 0.0),  # round(0.6)=1, round(0.5)=0 (half to even)
        ("or", 1.0),
        ("xor", 1.0),
    ],
)
def test_composite_combines_only_under_the_source(operation, value):
    (out,) = MaskComposite().combine(mask(DEST), mask([[0.5]]), 1, 0, operation)
    expected = mask([DEST])
    expected[0, 0, 1] = value
    assert torch.allclose(out, expected)


def test_composite_clips_the_source_and_clamps_the_result():
    (out,) = MaskComposite().combine(mask([[0.5, 0.5], [0.5, 0.5]]), torch.ones((1, 3, 3)), 1, 1, "add")
    assert torch.equal(out[0], mask([[0.5, 0.5], [0.5, 1.0]]))
    (outside,) = MaskComposite().combine(mask(DEST), torch.ones((1, 1, 1)), 5, 0, "add")
    assert torch.equal(outside[0], mask(DEST))


# -- FeatherMask ---------------------------------------------------------------------------
def test_feather_scales_edge_lines_as_comfyui_08_indexes_them():
    (out,) = FeatherMask().feather(torch.ones((1, 4, 6)), left=2, top=1, right=3, bottom=2)
    # Columns: left gives 1/2, 1; right (indexed −k) gives column 0 ×1/3, column 5 ×2/3, column 4 ×1.
    columns = mask([0.5 / 3, 1, 1, 1, 1, 2 / 3])
    # Rows: top=1 gives row 0 ×1; bottom (−k) gives row 0 ×1/2, row 3 ×1.
    rows = mask([0.5, 1, 1, 1])
    assert torch.allclose(out[0], rows[:, None] * columns[None, :])


def test_feather_sizes_are_capped_at_the_mask_size():
    (out,) = FeatherMask().feather(torch.ones((2, 1)), left=5, top=0, right=0, bottom=0)
    assert out.shape == (1, 2, 1) and torch.allclose(out, torch.tensor(1.0))  # left = 1: factor 1/1


# -- GrowMask ------------------------------------------------------------------------------
def dot(size: int = 5) -> torch.Tensor:
    grid = torch.zeros((1, size, size))
    grid[0, size // 2, size // 2] = 1.0
    return grid


def test_grow_with_tapered_corners_grows_a_diamond():
    (out,) = GrowMask().expand_mask(dot(), 2, True)
    rows, cols = torch.meshgrid(torch.arange(5), torch.arange(5), indexing="ij")
    assert torch.equal(out[0], ((rows - 2).abs() + (cols - 2).abs() <= 2).float())


def test_grow_without_tapering_grows_a_square():
    (out,) = GrowMask().expand_mask(dot(), 1, False)
    expected = torch.zeros((5, 5))
    expected[1:4, 1:4] = 1.0
    assert torch.equal(out[0], expected)


def test_shrink_erodes_from_holes_but_not_from_the_border():
    full = torch.ones((1, 4, 4))
    assert torch.equal(GrowMask().expand_mask(full, -1, True)[0], full)  # edges repeat outwards
    holed = full.clone()
    holed[0, 0, 0] = 0.0
    (out,) = GrowMask().expand_mask(holed, -1, True)
    assert out[0].sum() == 16 - 3 and out[0, 0, 1] == 0 and out[0, 1, 0] == 0 and out[0, 1, 1] == 1


def test_grow_takes_the_grey_maximum():
    grey = mask([[[0.2, 0.7, 0.1]]])
    (out,) = GrowMask().expand_mask(grey, 1, True)
    assert torch.allclose(out, mask([[[0.7, 0.7, 0.7]]]))
    assert torch.allclose(GrowMask().expand_mask(grey, -1, True)[0], mask([[[0.2, 0.1, 0.1]]]))


def test_threshold_is_strictly_greater():
    (out,) = ThresholdMask().threshold(mask([[0.5, 0.51, 0.2]]), 0.5)
    assert out.tolist() == [[0.0, 1.0, 0.0]]


# -- alpha split / join --------------------------------------------------------------------
def test_split_gives_rgb_and_one_minus_alpha():
    rgba = torch.tensor([[[[0.1, 0.2, 0.3, 1.0], [0.4, 0.5, 0.6, 0.25]]]])
    image, alpha_mask = SplitImageWithAlpha().split_image_with_alpha(rgba)
    assert torch.equal(image, rgba[..., :3]) and torch.equal(alpha_mask, mask([[[0.0, 0.75]]]))
    _, opaque = SplitImageWithAlpha().split_image_with_alpha(rgba[..., :3])
    assert not opaque.any()


def test_join_resizes_the_mask_and_takes_the_shorter_batch():
    image = torch.full((2, 2, 3, 3), 0.5)
    (out,) = JoinImageWithAlpha().join_image_with_alpha(image, torch.full((1, 1, 1), 0.25))
    assert out.shape == (1, 2, 3, 4)
    assert torch.all(out[..., 3] == 0.75) and torch.all(out[..., :3] == 0.5)


# -- LoadImageMask -------------------------------------------------------------------------
def test_load_image_mask_lists_every_input_file(folders):  # noqa: F811
    for name in ["b.png", "notes.txt", "a.jpg"]:
        (folders.input / name).write_bytes(b"x")
    (folders.input / "sub").mkdir()
    choices, options = LoadImageMask.INPUT_TYPES()["required"]["image"]
    assert choices == ["a.jpg", "b.png", "notes.txt"] and options == {"image_upload": True}


def test_load_image_mask_reads_one_channel(folders):  # noqa: F811
    pixels = np.array([[[255, 0, 51, 0], [102, 255, 0, 255]]], dtype=np.uint8)
    Image.fromarray(pixels).save(folders.input / "m.png")
    (alpha,) = LoadImageMask().load_image("m.png", "alpha")
    (red,) = LoadImageMask().load_image("m.png [input]", "red")
    (blue,) = LoadImageMask().load_image("m.png", "blue")
    assert alpha.shape == (1, 1, 2) and torch.allclose(alpha, mask([[[1.0, 0.0]]]))
    assert torch.allclose(red, mask([[[1.0, 0.4]]])) and torch.allclose(blue, mask([[[0.2, 0.0]]]))


def test_load_image_mask_of_an_opaque_image_is_zero_at_its_size(folders):  # noqa: F811
    Image.new("L", (3, 2), 128).save(folders.input / "gray.png")
    (alpha,) = LoadImageMask().load_image("gray.png", "alpha")
    (green,) = LoadImageMask().load_image("gray.png", "green")
    assert alpha.shape == (1, 2, 3) and not alpha.any()
    assert torch.allclose(green, torch.tensor(128 / 255))


def test_load_image_mask_scales_sixteen_bit_data_by_255(folders):  # noqa: F811
    Image.fromarray(np.array([[0, 2550, 65535]], dtype=np.uint16)).save(folders.input / "deep.png")
    (red,) = LoadImageMask().load_image("deep.png", "red")
    assert torch.allclose(red, mask([[[0.0, 10 / 255, 1.0]]]))


def test_load_image_mask_validates_and_hashes_like_load_image(folders):  # noqa: F811
    path = folders.input / "m.png"
    Image.new("RGBA", (1, 1)).save(path)
    assert LoadImageMask.VALIDATE_INPUTS("m.png") is True
    assert LoadImageMask.VALIDATE_INPUTS("../m.png") == "Invalid image file: ../m.png"
    assert LoadImageMask.IS_CHANGED("m.png", "alpha") == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="Invalid image file"):
        LoadImageMask().load_image("/etc/passwd", "red")
