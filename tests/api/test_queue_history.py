"""Queue, interrupt and history routes, held to ComfyUI's (queue_history.json)."""

from __future__ import annotations

import pytest

from tests.api.client import WsClient, get, post, request, types, wait_history
from tests.api.test_durability import wait_running
from tests.api.workflows import slow, tiny
from tests.conftest import reference

REF = reference("queue_history.json")


@pytest.fixture(scope="module")
def ws(server):
    client = WsClient(server.ws_url, "qsub")
    client.recv()
    yield client
    client.close()


def test_numbers_front_and_explicit(server):
    first = post(server.url, "/prompt", {"prompt": tiny(1)}).json()["number"]
    second = post(server.url, "/prompt", {"prompt": tiny(2)}).json()["number"]
    assert isinstance(first, int) and second == first + 1
    # A rejected body still advances the counter, as in ComfyUI.
    assert post(server.url, "/prompt", {"prompt": {}}).status == 400
    front = post(server.url, "/prompt", {"prompt": tiny(3), "front": True}).json()["number"]
    assert front == -(second + 2)
    explicit = post(server.url, "/prompt", {"prompt": tiny(4), "number": -1000})
    assert explicit.json()["number"] == -1000.0
    assert b"-1000.0" in explicit.body  # echoed as a float, as ComfyUI does
    after = post(server.url, "/prompt", {"prompt": tiny(5)}).json()["number"]
    assert after == second + 3  # explicit numbers do not advance the counter


def test_queue_shapes_delete_clear_and_interrupt(server, ws):
    ws.frames.clear()
    running_id = post(server.url, "/prompt", {
        "prompt": slow(20, steps=1000), "client_id": "qsub",
        "extra_data": {"custom_field": {"a": 1}, "api_key_comfy_org": "secret"},
    }).json()["prompt_id"]
    wait_running(server.url, running_id)
    pending = [post(server.url, "/prompt", {"prompt": tiny(30 + i), "client_id": "qsub"}).json()["prompt_id"]
               for i in range(4)]
    assert get(server.url, "/prompt").json() == {"exec_info": {"queue_remaining": 5}}

    queue = get(server.url, "/queue").json()
    ref_queue = REF["GET /queue (1 running, several pending)"]["response"]["body"]["json"]
    assert set(queue) == set(ref_queue)
    (running,) = queue["queue_running"]
    assert len(running) == 5 and running[1] == running_id
    assert set(running[3]) == {"custom_field", "client_id", "create_time"}  # the secret is stripped
    assert running[4] == ["9"]
    assert sorted(item[1] for item in queue["queue_pending"]) == sorted(pending)

    # delete: pending only; unknown ids and the running id are ignored.
    reply = post(server.url, "/queue", {"delete": [pending[1], "unknown-id", running_id]})
    assert (reply.status, reply.body) == (200, b"")
    assert sorted(i[1] for i in get(server.url, "/queue").json()["queue_pending"]) == sorted(
        [pending[0], pending[2], pending[3]])
    assert post(server.url, "/queue", {}).status == 200
    assert post(server.url, "/queue", {"clear": True}).status == 200
    queue = get(server.url, "/queue").json()
    assert queue["queue_pending"] == [] and queue["queue_running"][0][1] == running_id

    # Interrupting another prompt id does nothing; a global interrupt stops the running one.
    assert post(server.url, "/interrupt", {"prompt_id": "not-running"}).status == 200
    assert get(server.url, "/queue").json()["queue_running"][0][1] == running_id
    reply = request(server.url, "POST", "/interrupt", raw=b"")
    assert (reply.status, reply.body) == (200, b"")
    frames = ws.until_done(running_id)
    tail = [f for f in frames if f["type"] != "progress_state"][-3:]
    assert types(tail) == ["execution_interrupted", "status", "executing"]
    ref_data = next(f["msg"]["data"] for f in REF["ws[qsub] transcript of the queue test"]
                    if f.get("msg", {}).get("type") == "execution_interrupted")
    assert set(tail[0]["data"]) == set(ref_data)
    assert tail[0]["data"]["node_type"] == "ImageScaleBy"

    entry = get(server.url, f"/history/{running_id}").json()[running_id]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    assert "api_key_comfy_org" not in entry["prompt"][3]
    assert get(server.url, f"/history/{pending[1]}").json() == {}  # deleted, never ran


def test_interrupt_targets_the_named_prompt(server, ws):
    running_id = post(server.url, "/prompt", {"prompt": slow(40, steps=1000), "client_id": "qsub"}).json()["prompt_id"]
    wait_running(server.url, running_id)
    assert post(server.url, "/interrupt", {"prompt_id": running_id}).status == 200
    frames = ws.until_done(running_id)
    assert "execution_interrupted" in types(frames)


def test_reconnect_mid_run_gets_current_node_then_the_rest(server, ws):
    running_id = post(server.url, "/prompt", {"prompt": slow(50, steps=150), "client_id": "qsub"}).json()["prompt_id"]
    ws.until(lambda f: f["type"] == "executing" and f["data"].get("node") == "101")
    again = WsClient(server.ws_url, "qsub")
    hello = again.recv()
    assert hello["type"] == "status" and hello["data"]["sid"] == "qsub"
    current = again.recv()
    assert current["type"] == "executing" and set(current["data"]) == {"node"}
    assert again.until_done(running_id)[-1]["data"]["prompt_id"] == running_id
    again.close()


def test_history_order_and_paging(server):
    post(server.url, "/history", {"clear": True})
    ids = []
    for i in range(5):
        prompt_id = post(server.url, "/prompt", {"prompt": tiny(60 + i)}).json()["prompt_id"]
        wait_history(server.url, prompt_id)
        ids.append(prompt_id)

    def keys(query: str) -> list[str]:
        reply = get(server.url, "/history" + query)
        assert reply.status == 200
        return list(reply.json())

    assert keys("") == ids
    assert keys("?max_items=2") == ids[-2:]
    assert keys("?max_items=2&offset=1") == ids[1:3]
    assert keys("?offset=2") == ids[2:]
    assert keys("?max_items=0") == []
    assert keys("?offset=100") == []

    bad = get(server.url, "/history?max_items=abc")
    assert bad.status == 400
    assert bad.json()["error"]["message"] and "max_items" in bad.json()["error"]["details"]

    assert post(server.url, "/history", {"delete": [ids[0], "nope"]}).status == 200
    assert keys("") == ids[1:]
    assert post(server.url, "/history", {"clear": True}).status == 200
    assert get(server.url, "/history").json() == {}
    assert get(server.url, "/history/unknown").json() == {}


@pytest.mark.parametrize("path", ["/prompt", "/queue", "/history", "/free"])
def test_malformed_json_is_a_400_not_a_500(server, path):
    reply = request(server.url, "POST", path, raw=b"{not json", headers={"Content-Type": "application/json"})
    assert reply.status == 400
    body = reply.json()
    assert set(body) == {"error", "node_errors"}
    assert set(body["error"]) == {"type", "message", "details", "extra_info"}


def test_free_and_bad_interrupt_bodies(server):
    for body in ({"unload_models": True}, {"free_memory": True}, {}):
        reply = post(server.url, "/free", body)
        assert (reply.status, reply.body) == (200, b"")
    assert request(server.url, "POST", "/interrupt", raw=b"x").status == 200


def test_body_is_json_whatever_the_content_type(server):
    import json

    raw = json.dumps({"prompt": tiny(70)}).encode()
    for content_type in ("application/x-www-form-urlencoded", "text/plain", None):
        headers = {"Content-Type": content_type} if content_type else {}
        reply = request(server.url, "POST", "/prompt", raw=raw, headers=headers)
        assert reply.status == 200, reply.body
        wait_history(server.url, reply.json()["prompt_id"])


def test_interrupting_a_prompt_posted_without_client_id_is_broadcast(server):
    # ComfyUI sends execution_interrupted to everyone when the prompt has no client (its
    # broadcast flag); every other execution event of such a prompt goes nowhere.
    watcher = WsClient(server.ws_url, "watcher")
    watcher.recv()
    prompt_id = post(server.url, "/prompt", {"prompt": slow(41, steps=1000)}).json()["prompt_id"]
    wait_running(server.url, prompt_id)
    assert post(server.url, "/interrupt", {"prompt_id": prompt_id}).status == 200
    frames = watcher.until(lambda f: isinstance(f, dict) and f["type"] == "execution_interrupted")
    assert frames[-1]["data"]["prompt_id"] == prompt_id
    assert not [f for f in frames if f["type"] in ("execution_start", "executing", "executed")]
    wait_history(server.url, prompt_id)
    watcher.close()
