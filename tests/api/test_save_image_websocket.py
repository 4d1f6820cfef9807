"""SaveImageWebsocket through a real server: the image arrives as a binary frame in the layout
scripts slice (`out[8:]` after type 1, format 2), after the node's `executing`, to the
submitting client only; a client that asked for preview metadata gets a type 4 frame."""

from __future__ import annotations

import io
import json
import struct

from PIL import Image

from tests.api.client import WsClient, post


def prompt(color: int, batch: int = 1) -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": batch, "color": color}},
        "save_image_websocket_node": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    }


def test_image_frames_go_to_the_submitter_after_executing(server):
    submitter, observer = WsClient(server.ws_url, "ws-sub"), WsClient(server.ws_url, "ws-obs")
    submitter.recv(), observer.recv()
    reply = post(server.url, "/prompt", {"prompt": prompt(0x00FF00, batch=2), "client_id": "ws-sub"})
    assert reply.status == 200, reply.json()
    prompt_id = reply.json()["prompt_id"]
    frames = submitter.until_done(prompt_id)

    kinds = [f["type"] if isinstance(f, dict) else "binary" for f in frames if not (
        isinstance(f, dict) and f["type"] == "progress_state")]
    start = kinds.index("executing", kinds.index("executing") + 1)  # the second node's
    assert kinds[start:start + 4] == ["executing", "progress", "binary", "progress"]
    executing = [f for f in frames if isinstance(f, dict) and f["type"] == "executing"]
    assert executing[1]["data"]["node"] == "save_image_websocket_node"
    progress = [f["data"] for f in frames if isinstance(f, dict) and f["type"] == "progress"]
    assert [(p["value"], p["max"]) for p in progress] == [(0, 2), (1, 2)]

    images = [f for f in frames if isinstance(f, bytes)]
    assert len(images) == 2
    for frame in images:
        assert struct.unpack(">II", frame[:8]) == (1, 2)
        with Image.open(io.BytesIO(frame[8:])) as picture:
            assert picture.format == "PNG" and picture.size == (16, 8)
            assert picture.convert("RGB").getpixel((3, 3)) == (0, 255, 0)

    # The observer saw only status broadcasts (no execution events, no image) until its own
    # prompt, which it posts now as a marker, started.
    marker = post(server.url, "/prompt", {"prompt": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 1}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}, "client_id": "ws-obs"}).json()
    observed = observer.until_done(marker["prompt_id"])
    before_own = observed[: next(i for i, f in enumerate(observed)
                                 if isinstance(f, dict) and f["type"] == "execution_start")]
    assert before_own and all(isinstance(f, dict) and f["type"] == "status" for f in before_own)
    submitter.close(), observer.close()


def test_preview_metadata_clients_get_type_4_frames(server):
    client = WsClient(server.ws_url, "ws-meta")
    client.recv()
    client.send({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    client.recv()  # the server's feature_flags answer
    reply = post(server.url, "/prompt", {"prompt": prompt(0x0000FF), "client_id": "ws-meta"})
    frames = client.until_done(reply.json()["prompt_id"])
    (frame,) = [f for f in frames if isinstance(f, bytes)]
    assert struct.unpack(">I", frame[:4]) == (4,)
    (length,) = struct.unpack(">I", frame[4:8])
    metadata = json.loads(frame[8:8 + length])
    assert metadata["node_id"] == "save_image_websocket_node" and metadata["image_type"] == "image/png"
    with Image.open(io.BytesIO(frame[8 + length:])) as picture:
        assert picture.convert("RGB").getpixel((0, 0)) == (0, 0, 255)
    client.close()


def test_a_repeated_prompt_sends_the_image_again(server):
    client = WsClient(server.ws_url, "ws-again")
    client.recv()
    for _ in range(2):
        reply = post(server.url, "/prompt", {"prompt": prompt(0x123456), "client_id": "ws-again"})
        frames = client.until_done(reply.json()["prompt_id"])
        assert len([f for f in frames if isinstance(f, bytes)]) == 1
    client.close()
