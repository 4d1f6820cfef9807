"""The curl script in examples/ works against the real server as it does against ComfyUI."""

from __future__ import annotations

import subprocess

from PIL import Image

from tests.serverproc import REPO


def test_post_with_curl_and_read_the_image_back(server, tmp_path):
    out = tmp_path / "got.png"
    done = subprocess.run(
        ["sh", str(REPO / "examples" / "curl_roundtrip.sh"), server.url, str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.size == (64, 32)
        assert picture.convert("RGB").getpixel((10, 10)) == (255, 0, 0)
    saved = list((server.base / "output").glob("roundtrip_*_.png"))
    assert [p.name for p in saved] == ["roundtrip_00001_.png"]
    assert out.read_bytes() == saved[0].read_bytes()
