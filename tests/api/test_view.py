"""Black-box tests of `GET /view` (replaying view.json) and `GET /view_metadata/{folder}`."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from urllib.parse import urlencode

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from tests.api.client import Reply, get
from tests.api.images import decode, encoded, jpeg, original_with_text, png
from tests.conftest import reference

REF = reference("view.json")


def _mask_result() -> bytes:
    """The file ComfyUI's mask upload left in input/clipspace: 8x8 RGBA, text chunks kept."""
    original = decode(original_with_text())
    chunks = PngInfo()
    for key, value in original.text.items():
        chunks.add_text(key, value)
    merged = original.convert("RGBA")
    merged.putalpha(Image.new("L", (8, 8), 96))
    return encoded(merged, pnginfo=chunks)


# The files the reference's /view requests read, at the same places.
FILES = {
    "input/red.png": png(),
    "input/sub/dir/s.png": png(),
    "temp/t.png": png(),
    "output/up/o.png": png(),
    "input/photo.jpg": jpeg(),
    "input/notes.txt": b"hello",
    "input/page.html": b"<html>hi</html>",
    "input/clipspace/clipspace-mask-1.png": _mask_result(),
}


@pytest.fixture(scope="module")
def files(server) -> Path:
    for rel, data in FILES.items():
        path = server.base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return server.base


def _view(url: str, query: dict, path: str = "/view", headers: dict | None = None) -> Reply:
    return get(url, f"{path}?{urlencode(query)}", headers=headers)


def _stored_file(base: Path, query: dict) -> bytes:
    name = query["filename"].removesuffix(" [input]")
    kind = "input" if query["filename"] != name else query.get("type", "output")
    return (base / kind / query.get("subfolder", "") / name).read_bytes()


@pytest.mark.parametrize("case", list(REF))
def test_view_matches_reference(server, files: Path, case: str) -> None:
    req, expected = REF[case]["request"], REF[case]["response"]
    reply = _view(server.url, req["query"], req["path"], req.get("headers"))

    assert reply.status == expected["status"], (reply.status, reply.body[:200])
    assert reply.headers.get("X-Content-Type-Options") == "nosniff"
    for header in ("Content-Type", "Content-Disposition", "Accept-Ranges"):
        assert reply.headers.get(header) == expected["headers"].get(header), header
    body = expected["body"]
    if body["kind"] == "empty":
        assert reply.body == b""
        return
    if "Etag" in expected["headers"]:  # served as stored: exactly the file's bytes (or the range)
        assert "Etag" in reply.headers
        stored = _stored_file(files, req["query"])
        if expected["status"] == 206:
            first, last = (int(n) for n in req["headers"]["Range"].removeprefix("bytes=").split("-"))
            stored = stored[first : last + 1]
        assert reply.body == stored
    if body["kind"] == "text":
        assert reply.body.decode() == body["text"]
    elif "image" in body:
        image = decode(reply.body)
        want = body["image"]
        assert (image.format, image.mode, list(image.size)) == (want["format"], want["mode"], want["size"])
        assert getattr(image, "text", {}) == want.get("text_chunks", {})
    else:
        assert len(reply.body) == body["length"]


def test_range_request_is_206_with_content_range(server, files: Path) -> None:
    reply = _view(server.url, {"filename": "red.png", "type": "input"}, headers={"Range": "bytes=10-19"})
    assert reply.status == 206
    assert reply.headers["Content-Range"] == f"bytes 10-19/{len(FILES['input/red.png'])}"
    assert reply.body == FILES["input/red.png"][10:20]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("evil.html", b"<script>alert(1)</script>"),
        ("evil.htm", b"<script>alert(1)</script>"),
        ("evil.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'),
        ("evil.js", b"alert(1)"),
        ("evil.css", b"body{}"),
        ("evil.xhtml", b"<html/>"),
        ("evil.xml", b"<x/>"),
    ],
)
def test_renderable_files_are_never_served_inline(server, files: Path, name: str, data: bytes) -> None:
    (files / "input" / name).write_bytes(data)
    reply = _view(server.url, {"filename": name, "type": "input"})
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/octet-stream"
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert reply.body == data


def test_symlink_out_of_input_is_refused(server, files: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(png((1, 1, 1, 255)))
    os.symlink(secret, files / "input" / "leak.png")
    os.symlink(tmp_path, files / "input" / "leakdir")
    for query in ({"filename": "leak.png", "type": "input"},
                  {"filename": "secret.png", "type": "input", "subfolder": "leakdir"},
                  {"filename": "leak.png [input]", "preview": "webp;90"}):
        reply = _view(server.url, query)
        assert (reply.status, reply.body) == (403, b""), query


def test_symlink_staying_inside_is_served(server, files: Path) -> None:
    os.symlink(files / "input" / "red.png", files / "input" / "alias.png")
    reply = _view(server.url, {"filename": "alias.png", "type": "input"})
    assert reply.status == 200
    assert reply.headers["Content-Disposition"] == 'filename="alias.png"'
    assert reply.body == FILES["input/red.png"]


def test_preview_of_a_non_image_is_a_clear_400(server, files: Path) -> None:
    reply = _view(server.url, {"filename": "notes.txt", "type": "input", "preview": "webp;50"})
    assert reply.status == 400
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert reply.json()["error"]["type"] == "not_an_image"


def test_unusual_file_names_get_a_safe_content_disposition(server, files: Path) -> None:
    (files / "input" / 'quo"te é.png').write_bytes(png())
    reply = _view(server.url, {"filename": 'quo"te é.png', "type": "input"})
    assert reply.status == 200
    assert reply.headers["Content-Disposition"] == (
        "filename=\"quo_te _.png\"; filename*=UTF-8''quo%22te%20%C3%A9.png"
    )


# --- /view_metadata -------------------------------------------------------------------------

ROUTES = reference("routes_basic.json")


def _safetensors(path: Path, header: dict) -> None:
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 16)


@pytest.fixture(scope="module")
def models(server) -> Path:
    checkpoints = server.base / "models" / "checkpoints"
    tensor = {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    _safetensors(checkpoints / "sd15-mini.safetensors", {"__metadata__": {"format": "pt"}, **tensor})
    _safetensors(checkpoints / "nested" / "deep.safetensors", {"__metadata__": {"ss_x": "1"}, **tensor})
    _safetensors(checkpoints / "plain.safetensors", tensor)
    (checkpoints / "sd15-mini.ckpt").write_bytes(b"ckpt")
    (checkpoints / "broken.safetensors").write_bytes(b"\x01")
    return checkpoints


@pytest.mark.parametrize("path", [p for p in ROUTES if p.removeprefix("GET ").split("?")[0].startswith(
    ("/view_metadata", "/api/view_metadata"))])
def test_view_metadata_matches_reference(server, models: Path, path: str) -> None:
    expected = ROUTES[path]["response"]
    reply = get(server.url, path.removeprefix("GET "))
    assert reply.status == expected["status"]
    if expected["body"]["kind"] == "json":
        assert reply.headers["Content-Type"] == expected["headers"]["Content-Type"]
        assert reply.json() == expected["body"]["json"]
    else:
        assert reply.body == b""


def test_view_metadata_more_cases(server, models: Path) -> None:
    nested = get(server.url, "/view_metadata/checkpoints?filename=nested/deep.safetensors")
    assert (nested.status, nested.json()) == (200, {"ss_x": "1"})
    for bad in ("plain.safetensors", "../../input/x.safetensors", "/etc/x.safetensors"):
        reply = get(server.url, "/view_metadata/checkpoints?" + urlencode({"filename": bad}))
        assert (reply.status, reply.body) == (404, b""), bad
    broken = get(server.url, "/view_metadata/checkpoints?filename=broken.safetensors")
    assert broken.status == 422 and broken.json()["error"]["type"] == "invalid_safetensors"
