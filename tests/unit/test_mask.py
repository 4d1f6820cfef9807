"""Mask uploads: locating the original from `original_ref`, and merging the mask's alpha into it."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from comfyserve.config import Settings
from comfyserve.files.errors import FileRequestError
from comfyserve.files.mask import apply_mask
from comfyserve.files.original_ref import original_path
from comfyserve.paths import Folders


@pytest.fixture
def folders(tmp_path: Path) -> Folders:
    found = Folders.from_settings(Settings(base_directory=tmp_path / "base"))
    found.ensure()
    (found.input / "orig.png").write_bytes(b"i")
    (found.output / "up").mkdir()
    (found.output / "up" / "o.png").write_bytes(b"o")
    return found


def _ref(**fields: str) -> str:
    return json.dumps(fields)


def test_original_found_by_type_annotation_and_default_output(folders: Folders) -> None:
    assert original_path(folders, _ref(filename="orig.png", subfolder="", type="input")) == folders.input / "orig.png"
    assert original_path(folders, _ref(filename="orig.png [input]")) == folders.input / "orig.png"
    assert original_path(folders, _ref(filename="o.png", subfolder="up")) == folders.output / "up" / "o.png"


@pytest.mark.parametrize(
    ("raw", "status", "kind"),
    [
        (None, 400, "missing_original_ref"),
        ("nope", 400, "invalid_original_ref"),
        ("[1]", 400, "invalid_original_ref"),
        ('{"subfolder": ""}', 400, "invalid_original_ref"),
        ('{"filename": 3}', 400, "invalid_original_ref"),
        (_ref(filename=""), 400, "invalid_original_ref"),
        (_ref(filename="x.png", type="bogus"), 400, "invalid_original_ref"),
        (_ref(filename="../x.png", type="input"), 400, "path_escape"),
        (_ref(filename="/etc/passwd", type="input"), 400, "path_escape"),
        (_ref(filename="orig.png", subfolder="../..", type="input"), 403, "path_escape"),
        (_ref(filename="nope.png", type="input"), 404, "original_not_found"),
        (_ref(filename="orig.png"), 404, "original_not_found"),  # default type is output
    ],
)
def test_original_refusals_say_why(folders: Folders, raw: str | None, status: int, kind: str) -> None:
    with pytest.raises(FileRequestError) as err:
        original_path(folders, raw)
    assert (err.value.status, err.value.kind, err.value.bare) == (status, kind, False)
    assert err.value.message


def test_original_symlinked_out_is_refused(folders: Folders, tmp_path: Path) -> None:
    (tmp_path / "secret.png").write_bytes(b"s")
    os.symlink(tmp_path / "secret.png", folders.input / "leak.png")
    with pytest.raises(FileRequestError) as err:
        original_path(folders, _ref(filename="leak.png", type="input"))
    assert err.value.status == 403


def _original(path: Path, size: tuple[int, int] = (8, 8)) -> Path:
    info = PngInfo()
    info.add_text("prompt", '{"k":1}')
    info.add_text("custom", "v")
    Image.new("RGB", size, (200, 100, 50)).save(path, pnginfo=info)
    return path


def _mask(size: tuple[int, int] = (8, 8)) -> io.BytesIO:
    mask = Image.new("RGBA", size)
    for x in range(size[0]):
        for y in range(size[1]):
            mask.putpixel((x, y), (0, 0, 0, min(255, x * 32)))
    out = io.BytesIO()
    mask.save(out, format="PNG")
    out.seek(0)
    return out


def test_apply_mask_takes_rgb_from_original_alpha_from_mask_and_keeps_text(tmp_path: Path) -> None:
    result = Image.open(io.BytesIO(apply_mask(_original(tmp_path / "o.png"), _mask())))
    assert (result.format, result.mode, result.size) == ("PNG", "RGBA", (8, 8))
    assert result.text == {"prompt": '{"k":1}', "custom": "v"}
    assert result.getpixel((0, 0)) == (200, 100, 50, 0)
    assert result.getpixel((3, 0)) == (200, 100, 50, 96)
    assert result.getpixel((7, 5)) == (200, 100, 50, 224)


def test_apply_mask_scales_a_mask_of_the_same_shape(tmp_path: Path) -> None:
    result = Image.open(io.BytesIO(apply_mask(_original(tmp_path / "o.png", (16, 16)), _mask((8, 8)))))
    assert result.size == (16, 16)
    assert result.getpixel((0, 0))[3] == 0
    assert result.getpixel((15, 15))[3] == 224


def test_apply_mask_refuses_a_mask_of_another_shape(tmp_path: Path) -> None:
    with pytest.raises(FileRequestError) as err:
        apply_mask(_original(tmp_path / "o.png", (16, 8)), _mask((8, 8)))
    assert (err.value.status, err.value.kind) == (400, "mask_size_mismatch")
    assert "8x8" in err.value.message and "16x8" in err.value.message


def test_apply_mask_refuses_non_images(tmp_path: Path) -> None:
    (tmp_path / "o.txt").write_text("hello")
    with pytest.raises(FileRequestError) as err:
        apply_mask(tmp_path / "o.txt", _mask())
    assert (err.value.status, err.value.kind) == (400, "invalid_image")
    with pytest.raises(FileRequestError) as err:
        apply_mask(_original(tmp_path / "o.png"), io.BytesIO(b"not a png"))
    assert "mask" in err.value.message
