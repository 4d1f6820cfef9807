"""Websocket transcripts of real runs, held to ComfyUI's (ws_runs_tiny.json): order, fields, addressing."""

from __future__ import annotations

import re

import pytest

from tests.api.client import WsClient, get, post, types
from tests.conftest import reference

REF = reference("ws_runs_tiny.json")


def ref_frames(case: str, who: str = "ws[sub]") -> list:
    return [f["msg"] for f in REF[case][who] if "msg" in f]


@pytest.fixture(scope="module")
def clients(server):
    sub, obs = WsClient(server.ws_url, "sub"), WsClient(server.ws_url, "obs")
    for ws in (sub, obs):
        hello = ws.recv()
        assert hello["type"] == "status"
    yield sub, obs
    sub.close()
    obs.close()


def run(server, clients, case: str, body: dict | None = None):
    sub, obs = clients
    body = body or REF[case]["request_body"]
    reply = post(server.url, "/prompt", body)
    assert reply.status == 200, reply.body
    answer = reply.json()
    assert set(answer) == {"prompt_id", "number", "node_errors"}
    prompt_id = answer["prompt_id"]
    if "client_id" in body:
        frames = sub.until_done(prompt_id)
    else:
        frames = sub.until(lambda f: f["type"] == "status" and f["data"]["status"]["exec_info"]["queue_remaining"] == 0)
    observed = obs.until(lambda f: f["type"] == "status" and f["data"]["status"]["exec_info"]["queue_remaining"] == 0)
    return prompt_id, frames, observed


def test_success_run_matches_comfyui(server, clients):
    case = "success run (client_id=sub; SaveImage+PreviewImage)"
    prompt_id, frames, observed = run(server, clients, case)
    expected = ref_frames(case)
    assert types(frames, skip=()) == types(expected, skip=())
    for ours, theirs in zip(frames, expected, strict=True):
        assert set(ours["data"]) == set(theirs["data"]), ours["type"]
        if "node" in theirs["data"]:
            assert ours["data"]["node"] == theirs["data"]["node"]
        if ours["type"] != "status":
            assert ours["data"]["prompt_id"] == prompt_id
    # progress_state maps carry ComfyUI's per-node fields.
    state = next(f for f in frames if f["type"] == "progress_state")["data"]["nodes"]
    ref_state = next(f for f in expected if f["type"] == "progress_state")["data"]["nodes"]
    assert set(next(iter(state.values()))) == set(next(iter(ref_state.values())))
    # Other clients only see status broadcasts.
    assert types(observed) == types(ref_frames(case, "ws[obs]"))
    # The image names follow ComfyUI's patterns.
    executed = {f["data"]["node"]: f["data"]["output"] for f in frames if f["type"] == "executed"}
    assert re.fullmatch(r"wsrun_\d{5}_\.png", executed["3"]["images"][0]["filename"])
    assert re.fullmatch(r"ComfyUI_temp_[a-z]{5}_\d{5}_\.png", executed["4"]["images"][0]["filename"])
    assert executed["4"]["images"][0]["type"] == "temp"

    entry = get(server.url, f"/history/{prompt_id}").json()[prompt_id]
    ref_entry = next(iter(REF[case]["history_entry"]["response"]["body"]["json"].values()))
    assert set(entry) == set(ref_entry)
    assert isinstance(entry["prompt"][0], int)
    assert entry["prompt"][1:3] == [prompt_id, REF[case]["request_body"]["prompt"]]
    assert set(entry["prompt"][3]) == set(ref_entry["prompt"][3])
    assert sorted(entry["prompt"][4]) == sorted(ref_entry["prompt"][4])
    assert entry["outputs"] == executed
    assert entry["meta"] == ref_entry["meta"]
    assert [m[0] for m in entry["status"]["messages"]] == [m[0] for m in ref_entry["status"]["messages"]]
    assert {k: v for k, v in entry["status"].items() if k != "messages"} == {
        k: v for k, v in ref_entry["status"].items() if k != "messages"
    }


def test_same_prompt_again_is_fully_cached(server, clients):
    case = "same prompt again (fully cached)"
    prompt_id, frames, _ = run(server, clients, case)
    assert types(frames, skip=()) == types(ref_frames(case), skip=())
    cached = next(f for f in frames if f["type"] == "execution_cached")
    assert cached["data"]["nodes"] == ["1", "2", "3", "4"]
    entry = get(server.url, f"/history/{prompt_id}").json()[prompt_id]
    assert set(entry["outputs"]) == {"3", "4"}


def test_partly_cached_run(server, clients):
    case = "partly cached (only SaveImage prefix changed)"
    _, frames, _ = run(server, clients, case)
    assert types(frames, skip=()) == types(ref_frames(case), skip=())
    cached = next(f for f in frames if f["type"] == "execution_cached")
    assert cached["data"]["nodes"] == next(f for f in ref_frames(case) if f["type"] == "execution_cached")["data"]["nodes"]


def test_prompt_without_client_id_sends_no_execution_events(server, clients):
    case = "no client_id in POST body (completion detected by polling /history)"
    prompt_id, frames, observed = run(server, clients, case)
    assert types(frames, skip=()) == types(ref_frames(case), skip=())
    assert types(observed, skip=()) == types(ref_frames(case, "ws[obs]"), skip=())
    entry = get(server.url, f"/history/{prompt_id}").json()[prompt_id]
    assert entry["prompt"][3].keys() == {"create_time"}


def test_runtime_error_then_the_good_prompt_runs_everything(server, clients):
    (server.base / "input" / "broken.png").write_text("this is not an image")
    case = "runtime error (LoadImage of a non-image file)"
    prompt_id, frames, _ = run(server, clients, case)
    assert types(frames, skip=()) == types(ref_frames(case), skip=())
    error = next(f for f in frames if f["type"] == "execution_error")["data"]
    ref_error = next(f for f in ref_frames(case) if f["type"] == "execution_error")["data"]
    assert set(error) == set(ref_error)
    assert error["node_id"] == "1" and error["node_type"] == "LoadImage"
    assert error["exception_type"] == ref_error["exception_type"]
    assert error["current_inputs"] == ref_error["current_inputs"]
    entry = get(server.url, f"/history/{prompt_id}").json()[prompt_id]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["outputs"] == {}

    case = "run after the error (same good prompt as before, still cached?)"
    _, frames, _ = run(server, clients, case)
    assert types(frames, skip=()) == types(ref_frames(case), skip=())
