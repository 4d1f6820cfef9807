"""`/api/v1/prompts`: run-and-wait, answered by Accept, as the seed OpenAPI describes."""

from __future__ import annotations

import hashlib
import io
import json
import uuid

from PIL import Image

from tests.api.client import get, post, request
from tests.api.test_durability import wait_running
from tests.api.workflows import slow, tiny


def digest(prompt: dict) -> str:
    return "SHA256=" + hashlib.sha256(json.dumps(prompt, separators=(",", ":")).encode()).hexdigest()


def test_png_answer_with_digest(server):
    prompt = tiny(0xFF0000, prefix="v1png")
    reply = post(server.url, "/api/v1/prompts", prompt, headers={"Accept": "image/png"})
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "image/png"
    assert reply.headers["Digest"] == digest(prompt)
    assert reply.headers["Content-Disposition"].startswith("filename=v1png_")
    image = Image.open(io.BytesIO(reply.body))
    assert image.size == (8, 8)
    assert image.convert("RGB").getpixel((0, 0)) == (0, 255, 255)  # inverted red


def test_json_answer_urls_fetch_the_images(server):
    prompt = tiny(0x00FF00, prefix="v1json")
    reply = post(server.url, "/api/v1/prompts", {"prompt": prompt}, headers={"Accept": "application/json"})
    assert reply.status == 200
    body = reply.json()
    assert set(body) == {"urls", "outputs"}
    assert body["outputs"]["3"]["images"][0]["filename"].startswith("v1json_")
    (url,) = body["urls"]
    assert url.startswith(server.url + "/view?")
    fetched = get(server.url, url[len(server.url):])
    assert fetched.status == 200 and fetched.body.startswith(b"\x89PNG")
    assert get(server.url, "/api/v1/prompts").json() == prompt


def test_nothing_saved_is_204(server):
    reply = post(server.url, "/api/v1/prompts", tiny(7))
    assert reply.status == 204 and reply.body == b""


def test_invalid_prompt_is_400_envelope(server):
    reply = post(server.url, "/api/v1/prompts", {"1": {"class_type": "NoSuchNode", "inputs": {}}})
    assert reply.status == 400
    assert set(reply.json()) == {"error", "node_errors"}
    bad = request(server.url, "POST", "/api/v1/prompts", raw=b"{nope")
    assert bad.status == 400 and bad.json()["error"]["type"] == "invalid_json"


def test_failure_is_500_with_the_error(server):
    (server.base / "input" / "v1broken.png").write_text("not an image")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "v1broken.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "never"}},
    }
    reply = post(server.url, "/api/v1/prompts", prompt)
    assert reply.status == 500
    error = reply.json()["error"]
    assert error["type"] == "execution_error"
    assert error["extra_info"]["node_type"] == "LoadImage"


def test_multipart_with_files(server):
    name = f"mp-{uuid.uuid4().hex[:6]}.png"
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 20, 30)).save(buffer, format="PNG")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "mp"}},
    }
    boundary = "xxBOUNDARYxx"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n{json.dumps(prompt)}\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode() + buffer.getvalue() + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    reply = request(server.url, "POST", "/api/v1/prompts", raw=b"".join(parts), headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}", "Accept": "image/png"})
    assert reply.status == 200, reply.body
    assert Image.open(io.BytesIO(reply.body)).convert("RGB").getpixel((1, 1)) == (10, 20, 30)
    assert (server.base / "input" / name).is_file()


def test_full_queue_is_429(make_server):
    srv = make_server("--max-queue-size", "1")
    running = post(srv.url, "/prompt", {"prompt": slow(99, steps=1000)}).json()["prompt_id"]
    wait_running(srv.url, running)
    reply = post(srv.url, "/api/v1/prompts", tiny(1))
    assert reply.status == 429
    assert reply.json()["error"]["type"] == "queue_full"
    assert post(srv.url, "/prompt", {"prompt": tiny(2)}).status == 429
    post(srv.url, "/interrupt")
