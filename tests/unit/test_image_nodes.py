"""The built-in image nodes: /object_info entries equal ComfyUI's, tensors, files and PNG chunks."""

import hashlib
import json
import os
import re
import struct
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin, UnidentifiedImageError

import nodes
from comfyserve import runtime
from comfyserve.config import Settings
from comfyserve.engine.registry import NodeRegistry
from comfyserve.imageio import tensor_to_pil
from comfyserve.paths import Folders
from comfyserve.save_path import OUTSIDE_OUTPUT
from nodes.image import (
    EmptyImage,
    ImageInvert,
    ImageScale,
    ImageScaleBy,
    LoadImage,
    PreviewImage,
    SaveImage,
)
from tests.conftest import reference

IMAGE_NODES = ["SaveImage", "PreviewImage", "LoadImage", "ImageScale", "ImageScaleBy", "ImageInvert", "EmptyImage"]


def png_chunks(data: bytes) -> list[dict]:
    """Every chunk of a PNG in file order: type and length, plus keyword/text for tEXt."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        kind = data[offset + 4:offset + 8].decode("ascii")
        chunk = {"type": kind, "length": length}
        if kind == "tEXt":
            keyword, text = data[offset + 8:offset + 8 + length].split(b"\x00", 1)
            chunk.update(keyword=keyword.decode("latin-1"), text=text.decode("latin-1"))
        chunks.append(chunk)
        offset += 12 + length
    return chunks


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Folders:
    """A fresh base directory installed as the runtime's folders (restored afterwards)."""
    settings = Settings(base_directory=tmp_path)
    found = Folders.from_settings(settings)
    found.ensure()
    monkeypatch.setattr(runtime, "_settings", settings)
    monkeypatch.setattr(runtime, "_folders", found)
    return found


def image(values, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


# -- /object_info --------------------------------------------------------------------------
def test_object_info_entries_equal_comfyui(folders):
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    expected = reference("object_info_full.json")["body"]
    for class_type in IMAGE_NODES:
        assert json.loads(json.dumps(registry.node_info(class_type))) == expected[class_type], class_type


def test_package_exports_mappings_classes_and_max_resolution():
    assert nodes.MAX_RESOLUTION == 16384
    assert nodes.NODE_CLASS_MAPPINGS["SaveImage"] is nodes.SaveImage is SaveImage
    assert set(IMAGE_NODES) <= set(nodes.NODE_CLASS_MAPPINGS)
    assert "EmptyImage" not in nodes.NODE_DISPLAY_NAME_MAPPINGS  # ComfyUI shows the class name


def test_load_image_lists_image_files_at_the_top_of_input_sorted(folders):
    for name in ["b.png", "a.jpg", "c.webp", "notes.txt", "page.html", "noext", "Z.PNG"]:
        (folders.input / name).write_bytes(b"x")
    (folders.input / "sub").mkdir()
    (folders.input / "sub" / "deep.png").write_bytes(b"x")
    (folders.input / "folder.png").mkdir()
    choices, options = LoadImage.INPUT_TYPES()["required"]["image"]
    assert choices == ["Z.PNG", "a.jpg", "b.png", "c.webp"]
    assert options == {"image_upload": True}


# -- EmptyImage / ImageInvert --------------------------------------------------------------
def test_empty_image_has_the_color_in_each_channel():
    (out,) = EmptyImage().generate(width=4, height=3, batch_size=2, color=0x12_80_FF)
    assert out.shape == (2, 3, 4, 3) and out.dtype == torch.float32
    assert torch.equal(out[1, 2, 3], image([0x12 / 255, 0x80 / 255, 1.0]))
    assert torch.equal(out, out[:1, :1, :1].expand(2, 3, 4, 3))


def test_invert_of_a_known_image():
    source = image([[[[0.0, 0.25, 1.0], [0.5, 0.75, 0.1]]]])
    (out,) = ImageInvert().invert(source)
    assert out.shape == source.shape and out.dtype == torch.float32
    assert torch.allclose(out, image([[[[1.0, 0.75, 0.0], [0.5, 0.25, 0.9]]]]))


# -- scaling -------------------------------------------------------------------------------
def ramp(batch=1, height=4, width=6, channels=3) -> torch.Tensor:
    count = batch * height * width * channels
    return torch.arange(count, dtype=torch.float32).reshape(batch, height, width, channels) / count


@pytest.mark.parametrize("method", ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"])
def test_scale_gives_the_requested_size_for_every_method(method):
    (out,) = ImageScale().upscale(ramp(batch=2), method, 9, 5, "disabled")
    assert out.shape == (2, 5, 9, 3) and out.dtype == torch.float32


def test_nearest_exact_doubling_repeats_pixels():
    source = ramp(height=2, width=2)
    (out,) = ImageScale().upscale(source, "nearest-exact", 4, 4, "disabled")
    assert torch.equal(out, source.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2))


def test_area_halving_averages_two_by_two_blocks():
    source = ramp(height=4, width=4)
    (out,) = ImageScale().upscale(source, "area", 2, 2, "disabled")
    expected = source.reshape(1, 2, 2, 2, 2, 3).mean(dim=(2, 4))
    assert torch.allclose(out, expected)


def test_bilinear_and_bicubic_use_torch_without_antialias_or_corner_alignment():
    source = ramp(height=8, width=8)
    for method in ("bilinear", "bicubic"):
        (out,) = ImageScale().upscale(source, method, 3, 5, "disabled")
        expected = torch.nn.functional.interpolate(source.movedim(-1, 1), size=(5, 3), mode=method).movedim(1, -1)
        assert torch.equal(out, expected)


def test_lanczos_goes_through_8_bit_pil():
    source = ramp(height=6, width=6)
    (out,) = ImageScale().upscale(source, "lanczos", 3, 3, "disabled")
    expected = np.array(tensor_to_pil(source[0]).resize((3, 3), Image.Resampling.LANCZOS)).astype(np.float32) / 255
    assert torch.equal(out[0], torch.from_numpy(expected))


def test_lanczos_keeps_one_and_four_channel_images():
    for channels in (1, 4):
        (out,) = ImageScaleBy().upscale(ramp(height=4, width=4, channels=channels), "lanczos", 2.0)
        assert out.shape == (1, 8, 8, channels)


def test_center_crop_cuts_the_long_side_before_scaling():
    # 4 rows × 8 columns, each column its own value; a square target keeps columns 2..5.
    columns = torch.arange(8, dtype=torch.float32).repeat(4, 1)
    source = columns[None, :, :, None].repeat(1, 1, 1, 3) / 8
    (out,) = ImageScale().upscale(source, "nearest-exact", 4, 4, "center")
    assert torch.equal(out[0, 0, :, 0] * 8, image([2, 3, 4, 5]))
    (tall,) = ImageScale().upscale(source.transpose(1, 2), "nearest-exact", 4, 4, "center")
    assert torch.equal(tall[0, :, 0, 0] * 8, image([2, 3, 4, 5]))


def test_zero_width_or_height_keeps_the_aspect_ratio():
    source = ramp(height=4, width=6)
    assert ImageScale().upscale(source, "bilinear", 0, 8, "disabled")[0].shape == (1, 8, 12, 3)
    assert ImageScale().upscale(source, "bilinear", 3, 0, "disabled")[0].shape == (1, 2, 3, 3)
    assert ImageScale().upscale(source, "bilinear", 0, 0, "disabled")[0] is source


def test_scale_by_rounds_the_size_and_never_reaches_zero():
    source = ramp(height=4, width=6)
    assert ImageScaleBy().upscale(source, "bicubic", 1.5)[0].shape == (1, 6, 9, 3)
    assert ImageScaleBy().upscale(source, "area", 0.01)[0].shape == (1, 1, 1, 3)


# -- LoadImage -----------------------------------------------------------------------------
def test_rgb_image_loads_with_an_empty_64_square_mask(folders):
    pixels = np.array([[[255, 0, 0], [0, 128, 255]]], dtype=np.uint8)
    Image.fromarray(pixels).save(folders.input / "rgb.png")
    picture, mask = LoadImage().load_image("rgb.png")
    assert picture.shape == (1, 1, 2, 3) and picture.dtype == torch.float32
    assert torch.equal(picture[0], torch.from_numpy(pixels.astype(np.float32) / 255.0))
    assert mask.shape == (1, 64, 64) and mask.dtype == torch.float32 and not mask.any()


def test_mask_is_one_minus_alpha(folders):
    pixels = np.array([[[10, 20, 30, 0], [10, 20, 30, 255], [10, 20, 30, 51]]], dtype=np.uint8)
    Image.fromarray(pixels).save(folders.input / "rgba.png")
    picture, mask = LoadImage().load_image("rgba.png")
    assert picture.shape == (1, 1, 3, 3)
    assert torch.allclose(mask, image([[[1.0, 0.0, 0.8]]]))


def test_palette_transparency_becomes_the_mask(folders):
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 255, 0])
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0
    palette.save(folders.input / "pal.png", transparency=0)
    picture, mask = LoadImage().load_image("pal.png")
    assert torch.equal(picture[0, 0], image([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    assert torch.equal(mask, image([[[1.0, 0.0]]]))


def test_frames_become_a_batch_and_other_sizes_are_skipped(folders):
    frames = [Image.new("RGB", (4, 2), (255 * (i % 2), 0, 0)) for i in range(3)]
    odd = Image.new("RGB", (5, 5), (0, 0, 255))
    frames[0].save(folders.input / "pages.tiff", save_all=True, append_images=[frames[1], odd, frames[2]])
    picture, mask = LoadImage().load_image("pages.tiff")
    assert picture.shape == (3, 2, 4, 3)
    assert picture[:, 0, 0, 0].tolist() == [0.0, 1.0, 0.0]
    assert mask.shape == (3, 64, 64)


def test_animated_gif_with_transparency_gives_one_mask_per_frame(folders):
    def frame(index: int) -> Image.Image:
        picture = Image.new("P", (3, 2), index)
        picture.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
        return picture

    second = frame(1)
    second.putpixel((0, 0), 2)  # palette entry 2 is the transparent one
    frame(0).save(folders.input / "anim.gif", save_all=True, append_images=[second], transparency=2, disposal=2, optimize=False)
    picture, mask = LoadImage().load_image("anim.gif")
    assert picture.shape == (2, 2, 3, 3)
    assert picture[1, 1, 1].tolist() == [0.0, 1.0, 0.0]
    assert mask.shape == (2, 2, 3)
    assert mask[1, 0, 0] == 1.0 and mask.sum() == 1.0


def test_frames_without_alpha_get_zero_masks_of_the_frame_size(folders):
    opaque = Image.new("RGB", (3, 2), (255, 0, 0))
    clear = Image.new("RGBA", (3, 2), (0, 0, 255, 0))
    opaque.save(folders.input / "mixed.tiff", save_all=True, append_images=[clear])
    _, mask = LoadImage().load_image("mixed.tiff")
    assert mask.shape == (2, 2, 3)
    assert mask[0].max() == 0.0 and mask[1].min() == 1.0


def test_exif_orientation_is_applied(folders):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.new("RGB", (8, 4), (200, 10, 10)).save(folders.input / "photo.jpg", exif=exif)
    picture, _ = LoadImage().load_image("photo.jpg")
    assert picture.shape == (1, 8, 4, 3)


def test_sixteen_bit_grayscale_keeps_its_range(folders):
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(folders.input / "deep.png")
    picture, _ = LoadImage().load_image("deep.png")
    assert torch.allclose(picture[0, 0, :, 0], image([0.0, 32768 / 65535, 1.0]))
    assert torch.equal(picture[..., 0], picture[..., 2])


def test_annotated_names_load_from_their_folder(folders):
    Image.new("RGB", (2, 2), (0, 255, 0)).save(folders.output / "out.png")
    picture, _ = LoadImage().load_image("out.png [output]")
    assert picture[0, 0, 0].tolist() == [0.0, 1.0, 0.0]
    assert LoadImage.VALIDATE_INPUTS("out.png [output]") is True
    assert LoadImage.VALIDATE_INPUTS("out.png") == "Invalid image file: out.png"


def test_validate_rejects_missing_files_and_escapes(folders):
    (folders.base / "secret.png").write_bytes(b"x")
    (folders.input / "dir.png").mkdir()
    for name in ["does_not_exist.png", "../secret.png", "/etc/passwd", "dir.png"]:
        assert LoadImage.VALIDATE_INPUTS(name) == f"Invalid image file: {name}"
    with pytest.raises(ValueError, match="Invalid image file"):
        LoadImage().load_image("../secret.png")


def test_is_changed_is_the_sha256_of_the_file(folders):
    path = folders.input / "red.png"
    Image.new("RGB", (2, 2), (255, 0, 0)).save(path)
    first = LoadImage.IS_CHANGED("red.png")
    assert first == hashlib.sha256(path.read_bytes()).hexdigest()
    Image.new("RGB", (2, 2), (0, 0, 255)).save(path)
    assert LoadImage.IS_CHANGED("red.png [input]") != first


def test_a_file_that_is_no_image_raises_pil_error(folders):
    (folders.input / "broken.png").write_bytes(b"not an image")
    with pytest.raises(UnidentifiedImageError, match="cannot identify image file"):
        LoadImage().load_image("broken.png")


def test_truncated_png_still_loads(folders):
    path = folders.input / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:-40])
    picture, _ = LoadImage().load_image("cut.png")
    assert picture.shape == (1, 32, 32, 3)


# -- SaveImage / PreviewImage --------------------------------------------------------------
def test_save_image_writes_numbered_pngs_with_prompt_and_extra_chunks(folders):
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 2}}}
    extra = {"workflow": {"nodes": []}, "plain": "str"}
    batch = EmptyImage().generate(width=2, height=3, batch_size=2, color=0xFF0000)[0]
    ui = SaveImage().save_images(batch, "run", prompt=prompt, extra_pnginfo=extra)
    assert ui == {"ui": {"images": [
        {"filename": "run_00001_.png", "subfolder": "", "type": "output"},
        {"filename": "run_00002_.png", "subfolder": "", "type": "output"},
    ]}}
    data = (folders.output / "run_00002_.png").read_bytes()
    chunks = png_chunks(data)
    assert [c["type"] for c in chunks] == ["IHDR", "tEXt", "tEXt", "tEXt", "IDAT", "IEND"]
    assert [(c["keyword"], c["text"]) for c in chunks if c["type"] == "tEXt"] == [
        ("prompt", json.dumps(prompt)), ("workflow", '{"nodes": []}'), ("plain", '"str"')]
    saved = Image.open(folders.output / "run_00001_.png")
    assert saved.mode == "RGB" and saved.size == (2, 3) and saved.getpixel((0, 0)) == (255, 0, 0)


def test_save_never_overwrites_a_file_the_counter_index_could_not_see(folders):
    # A file slipped in with the folder's mtime unchanged (a coarse-mtime filesystem, say).
    SaveImage().save_images(ramp(), "keep")
    before = os.stat(folders.output).st_mtime_ns
    (folders.output / "keep_00002_.png").write_bytes(b"someone else's file")
    os.utime(folders.output, ns=(before, before))
    ui = SaveImage().save_images(ramp(), "keep")
    assert ui["ui"]["images"][0]["filename"] == "keep_00003_.png"
    assert (folders.output / "keep_00002_.png").read_bytes() == b"someone else's file"


def test_previews_never_overwrite_either(folders):
    preview = PreviewImage()
    first = preview.save_images(ramp())["ui"]["images"][0]["filename"]
    taken = first.replace("_00001_", "_00002_")
    before = os.stat(folders.temp).st_mtime_ns
    (folders.temp / taken).write_bytes(b"not ours")
    os.utime(folders.temp, ns=(before, before))
    again = preview.save_images(ramp())["ui"]["images"][0]["filename"]
    assert again == first.replace("_00001_", "_00003_")
    assert (folders.temp / taken).read_bytes() == b"not ours"
    assert Image.open(folders.temp / again).format == "PNG"


def test_pixels_are_truncated_to_8_bits_like_comfyui(folders):
    values = image([[[[0.999, 0.5, -0.2], [1.5, 0.00392, 0.0]]]])
    SaveImage().save_images(values, "trunc")
    saved = Image.open(folders.output / "trunc_00001_.png")
    assert [saved.getpixel((x, 0)) for x in range(2)] == [(254, 127, 0), (255, 0, 0)]


def test_disable_metadata_writes_no_text_chunks(folders, monkeypatch):
    monkeypatch.setattr(runtime, "_settings", replace(runtime.settings(), disable_metadata=True))
    SaveImage().save_images(ramp(), "plain", prompt={"1": {}}, extra_pnginfo={"workflow": {}})
    chunks = png_chunks((folders.output / "plain_00001_.png").read_bytes())
    assert [c["type"] for c in chunks] == ["IHDR", "IDAT", "IEND"]


def test_unusable_extra_pnginfo_keys_are_left_out(folders):
    SaveImage().save_images(ramp(), "keys", prompt=None, extra_pnginfo={"ok": 1, "ключ": 2, "x" * 80: 3, "": 4})
    chunks = png_chunks((folders.output / "keys_00001_.png").read_bytes())
    assert [(c["keyword"], c["text"]) for c in chunks if c["type"] == "tEXt"] == [("ok", "1")]


def test_saving_outside_the_output_folder_fails_and_writes_nothing(folders):
    with pytest.raises(Exception, match=re.escape(OUTSIDE_OUTPUT)):
        SaveImage().save_images(ramp(), "../escape")
    assert not list(folders.base.glob("escape*"))


def test_preview_image_writes_to_temp_with_a_random_prefix_and_fast_compression(folders):
    node = PreviewImage()
    first = node.save_images(ramp(), prompt={"1": {}})["ui"]["images"]
    second = node.save_images(ramp())["ui"]["images"]
    assert re.fullmatch(r"ComfyUI_temp_[a-z]{5}_00001_\.png", first[0]["filename"])
    assert second[0]["filename"] == first[0]["filename"].replace("00001", "00002")
    assert first[0]["subfolder"] == "" and first[0]["type"] == "temp"
    data = (folders.temp / first[0]["filename"]).read_bytes()
    metadata = PngImagePlugin.PngInfo()
    metadata.add_text("prompt", json.dumps({"1": {}}))
    expected = Path(folders.base / "expected.png")
    tensor_to_pil(ramp()[0]).save(expected, pnginfo=metadata, compress_level=1)
    assert data == expected.read_bytes()
    assert not list(folders.output.iterdir())


def test_saved_files_match_comfyui_chunk_for_chunk(folders):
    """Replay the captured SaveImage/PreviewImage runs: same names, same chunks, same IDAT sizes."""
    year = str(time.localtime().tm_year)
    for case, record in reference("png_metadata_and_filenames.json").items():
        if not isinstance(record, dict):
            continue
        if "num_00010_" in case:
            (folders.output / "num_00010_.png").write_bytes(b"manually added")
        prompt = record["request_body"]["prompt"]
        extra = record["request_body"].get("extra_data", {}).get("extra_pnginfo")
        pixels = EmptyImage().generate(**prompt["1"]["inputs"])[0]
        if "2" in prompt:
            pixels = ImageInvert().invert(pixels)[0]
        saver = nodes.NODE_CLASS_MAPPINGS[prompt["3"]["class_type"]]()
        widgets = {k: v for k, v in prompt["3"]["inputs"].items() if k != "images"}
        if record["status"] == "error":
            with pytest.raises(Exception, match=re.escape(OUTSIDE_OUTPUT)):
                saver.save_images(pixels, prompt=prompt, extra_pnginfo=extra, **widgets)
            continue
        refs = saver.save_images(pixels, prompt=prompt, extra_pnginfo=extra, **widgets)["ui"]["images"]
        assert len(refs) == len(record["files"]), case
        for ref, expected in zip(refs, record["files"], strict=True):
            want = {**expected["ref"], "filename": expected["ref"]["filename"].replace("2026", year)}
            if want["type"] == "temp":  # a random part: compare the pattern
                assert re.fullmatch(r"ComfyUI_temp_[a-z]{5}_00001_\.png", ref["filename"]), ref
                want["filename"] = ref["filename"]
            assert ref == want, case
            folder = folders.directory_by_type(ref["type"]) / ref["subfolder"]
            assert png_chunks((folder / ref["filename"]).read_bytes()) == expected["png_chunks"], case
