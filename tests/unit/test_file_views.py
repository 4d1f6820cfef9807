"""`/view` logic without a server: annotations, path checks, headers, preview/channel renditions."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from comfyserve.config import Settings
from comfyserve.files.annotated import split_annotation
from comfyserve.files.errors import FileRequestError
from comfyserve.files.imageview import needs_rendition, preview_format, render
from comfyserve.files.view_headers import content_disposition, view_content_type, view_headers
from comfyserve.files.view_path import view_path
from comfyserve.paths import Folders


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.png [input]", ("a.png", "input")),
        ("a.png [output]", ("a.png", "output")),
        ("a.png [temp]", ("a.png", "temp")),
        ("a.png", ("a.png", None)),
        ("a.png [bogus]", ("a.png [bogus]", None)),
        (" [input]", ("", "input")),
    ],
)
def test_split_annotation(name: str, expected: tuple) -> None:
    assert split_annotation(name) == expected


@pytest.fixture
def folders(tmp_path: Path) -> Folders:
    found = Folders.from_settings(Settings(base_directory=tmp_path / "base"))
    found.ensure()
    (found.input / "sub").mkdir()
    (found.input / "red.png").write_bytes(b"red")
    (found.input / "sub" / "s.png").write_bytes(b"s")
    (found.output / "o.png").write_bytes(b"o")
    return found


def test_view_path_finds_files(folders: Folders) -> None:
    assert view_path(folders, {"filename": "red.png", "type": "input"}) == (folders.input / "red.png", "red.png")
    assert view_path(folders, {"filename": "red.png [input]"})[0] == folders.input / "red.png"
    assert view_path(folders, {"filename": "o.png"})[0] == folders.output / "o.png"  # default type output
    assert view_path(folders, {"filename": "s.png", "type": "input", "subfolder": "sub"})[0] == folders.input / "sub" / "s.png"


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ({"type": "input"}, 404),
        ({"filename": "", "type": "input"}, 400),
        ({"filename": " [input]"}, 400),
        ({"filename": "../red.png", "type": "input"}, 400),
        ({"filename": "a..b.png", "type": "input"}, 400),
        ({"filename": "/etc/passwd", "type": "input"}, 400),
        ({"filename": "red.png", "type": "bogus"}, 400),
        ({"filename": "red.png", "type": "input", "subfolder": "../.."}, 403),
        ({"filename": "passwd", "type": "input", "subfolder": "/etc"}, 403),
        ({"filename": "red.png"}, 404),
        ({"filename": "red.png [temp]"}, 404),
        ({"filename": "sub/s.png", "type": "input"}, 404),  # folders in the name are dropped
        ({"filename": "sub", "type": "input"}, 404),  # a folder is not a file
        ({"filename": "nothere.png", "type": "input"}, 404),
    ],
)
def test_view_path_refusals_are_bare_with_comfyui_status(folders: Folders, query: dict, status: int) -> None:
    with pytest.raises(FileRequestError) as err:
        view_path(folders, query)
    assert (err.value.status, err.value.bare) == (status, True)


def test_view_path_refuses_symlink_out_but_follows_symlink_in(folders: Folders, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", folders.input / "leak.png")
    os.symlink(folders.input / "red.png", folders.input / "alias.png")
    with pytest.raises(FileRequestError) as err:
        view_path(folders, {"filename": "leak.png", "type": "input"})
    assert err.value.status == 403
    assert view_path(folders, {"filename": "alias.png", "type": "input"}) == (folders.input / "red.png", "alias.png")


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [
        ("a.png", "image/png"),
        ("a.jpg", "image/jpeg"),
        ("a.webp", "image/webp"),
        ("a.mp4", "video/mp4"),
        ("a.flac", "audio/flac"),
        ("a.txt", "text/plain"),
        ("a.json", "application/json"),
        ("a.html", "application/octet-stream"),
        ("a.htm", "application/octet-stream"),
        ("a.xhtml", "application/octet-stream"),
        ("a.svg", "application/octet-stream"),
        ("a.js", "application/octet-stream"),
        ("a.mjs", "application/octet-stream"),
        ("a.css", "application/octet-stream"),
        ("a.xml", "application/octet-stream"),
        ("a.pdf", "application/octet-stream"),
        ("a.safetensors", "application/octet-stream"),
        ("noext", "application/octet-stream"),
    ],
)
def test_view_content_type_never_lets_a_browser_run_a_file(filename: str, content_type: str) -> None:
    assert view_content_type(filename) == content_type


def test_content_disposition() -> None:
    assert content_disposition("red.png") == 'filename="red.png"'
    assert content_disposition("red (1).png") == 'filename="red (1).png"'
    assert content_disposition('a"b.png') == "filename=\"a_b.png\"; filename*=UTF-8''a%22b.png"
    assert content_disposition("été.png") == "filename=\"_t_.png\"; filename*=UTF-8''%C3%A9t%C3%A9.png"
    assert "\r" not in content_disposition("a\r\nSet-Cookie: x.png")


def test_view_headers_always_nosniff() -> None:
    assert view_headers("a.html", "application/octet-stream") == {
        "Content-Type": "application/octet-stream",
        "Content-Disposition": 'filename="a.html"',
        "X-Content-Type-Options": "nosniff",
    }


@pytest.mark.parametrize(
    ("preview", "channel", "expected"),
    [
        ("webp;90", "", ("webp", 90)),
        ("jpeg;50", "", ("jpeg", 50)),
        ("jpeg", "", ("jpeg", 90)),
        ("png", "", ("webp", 90)),
        ("jpeg", "a", ("webp", 90)),
        ("jpeg;70", "rgba", ("webp", 70)),
        ("webp;80", "rgb", ("webp", 80)),
        ("jpeg;500", "", ("jpeg", 100)),
        ("jpeg;0", "", ("jpeg", 1)),
        ("", "", ("webp", 90)),
    ],
)
def test_preview_format(preview: str, channel: str, expected: tuple) -> None:
    assert preview_format(preview, channel) == expected


@pytest.mark.parametrize(
    ("preview", "channel", "expected"),
    [(None, None, False), (None, "rgba", False), (None, "bogus", False), (None, "rgb", True), (None, "a", True), ("webp", None, True)],
)
def test_needs_rendition(preview: str | None, channel: str | None, expected: bool) -> None:
    assert needs_rendition(preview, channel) is expected


@pytest.fixture
def rgba_png(tmp_path: Path) -> Path:
    image = Image.new("RGBA", (8, 4), (10, 20, 30, 255))
    image.putpixel((1, 0), (10, 20, 30, 77))
    path = tmp_path / "rgba.png"
    image.save(path)
    return path


def _decode(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    image.load()
    return image


def test_render_preview_jpeg_and_webp(rgba_png: Path) -> None:
    jpeg = render(rgba_png, "jpeg;50", None)
    assert jpeg.content_type == "image/jpeg"
    assert (_decode(jpeg.body).format, _decode(jpeg.body).mode, _decode(jpeg.body).size) == ("JPEG", "RGB", (8, 4))
    webp = render(rgba_png, "png", "a")
    assert webp.content_type == "image/webp"
    assert _decode(webp.body).format == "WEBP"
    assert _decode(webp.body).getpixel((1, 0))[3] < 255  # alpha kept


def test_render_channel_rgb_drops_alpha(rgba_png: Path) -> None:
    out = render(rgba_png, None, "rgb")
    image = _decode(out.body)
    assert (out.content_type, image.format, image.mode) == ("image/png", "PNG", "RGB")
    assert image.getpixel((1, 0)) == (10, 20, 30)


def test_render_channel_a_is_black_with_the_alpha(rgba_png: Path) -> None:
    image = _decode(render(rgba_png, None, "a").body)
    assert image.mode == "RGBA"
    assert image.getpixel((1, 0)) == (0, 0, 0, 77)
    assert image.getpixel((0, 0)) == (0, 0, 0, 255)


def test_render_channel_a_of_opaque_jpeg_is_opaque(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "p.jpg")
    image = _decode(render(tmp_path / "p.jpg", None, "a").body)
    assert (image.mode, image.size, image.getpixel((4, 4))) == ("RGBA", (8, 8), (0, 0, 0, 255))


def test_render_palette_image_preview(tmp_path: Path) -> None:
    Image.new("P", (4, 4), 3).save(tmp_path / "p.gif")
    out = render(tmp_path / "p.gif", "webp;80", None)
    assert _decode(out.body).format == "WEBP"


def test_render_of_a_non_image_is_a_clear_400(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FileRequestError) as err:
        render(tmp_path / "notes.txt", "webp", None)
    assert (err.value.status, err.value.bare, err.value.kind) == (400, False, "not_an_image")
