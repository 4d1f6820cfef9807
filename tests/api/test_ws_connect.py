"""The websocket handshake, held to ComfyUI's (ws_connect.json)."""

from __future__ import annotations

import re

from tests.api.client import WsClient, get, post, types
from tests.conftest import reference

REF = reference("ws_connect.json")
FLAGS = REF["connect without clientId + empty feature_flags"]["frames"][1]["msg"]


def test_status_with_fresh_sid(server):
    ws = WsClient(server.ws_url)
    hello = ws.recv()
    ws.close()
    ref = REF["connect without clientId"]["frames"][0]["msg"]
    assert hello["type"] == ref["type"] == "status"
    assert set(hello["data"]) == set(ref["data"])
    assert re.fullmatch(r"[0-9a-f]{32}", hello["data"]["sid"])
    assert hello["data"]["status"] == {"exec_info": {"queue_remaining": 0}}


def test_client_id_is_reused_as_sid(server):
    ws = WsClient(server.ws_url, "abc123")
    assert ws.recv() == REF["connect with ?clientId=abc123"]["frames"][0]["msg"]
    ws.close()


def test_api_prefix(server):
    ws = WsClient(server.ws_url.replace("/ws", "/api/ws"), "apiprefix")
    assert ws.recv()["data"]["sid"] == "apiprefix"
    ws.close()


TINY = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 5}},
    "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
}


def frames_of_a_run(server, ws: WsClient) -> list:
    """Everything the socket receives up to the end of a prompt posted now.

    The ping makes sure the server has read our earlier messages; any answer to them would be
    queued before this prompt's events, so it would show up in the returned frames.
    """
    ws.conn.ping().wait(5)
    reply = post(server.url, "/prompt", {"prompt": TINY, "client_id": ws.client_id})
    assert reply.status == 200
    return ws.until_done(reply.json()["prompt_id"])


def test_first_feature_flags_message_is_answered_later_ones_ignored(server):
    ws = WsClient(server.ws_url, "flags")
    ws.recv()
    ws.send({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    assert ws.recv() == FLAGS
    ws.send({"type": "feature_flags", "data": {}})
    ws.send("not json at all")
    assert "feature_flags" not in types(frames_of_a_run(server, ws))
    ws.close()


def test_non_json_first_message_is_ignored_and_socket_stays_open(server):
    ws = WsClient(server.ws_url, "garbage")
    ws.recv()
    ws.send("{{{")
    ws.send({"type": "feature_flags", "data": {}})  # not the first message any more
    frames = frames_of_a_run(server, ws)
    assert "feature_flags" not in types(frames)
    assert "execution_success" in types(frames)
    ws.close()


def test_features_route_equals_handshake_answer(server):
    assert get(server.url, "/features").json() == FLAGS["data"]


def test_plain_get_is_400_text(server):
    reply = get(server.url, "/ws")
    ref = REF["plain HTTP GET /ws (no upgrade)"]
    assert reply.status == ref["status"] == 400
    assert reply.headers["Content-Type"] == ref["content_type"]
