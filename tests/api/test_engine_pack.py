"""The engine through a real server, driven by a custom node pack (tests/packs/engine_testpack)
loaded from custom_nodes/ like any ComfyUI pack: which nodes run, which are cached, outputs,
websocket message order and errors — in the three cache modes."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.client import WsClient, post, types, wait_history
from tests.serverproc import REPO, ServerProcess

PACK = REPO / "tests" / "packs" / "engine_testpack"


def start_with_pack(base: Path, *args: str) -> ServerProcess:
    shutil.copytree(PACK, base / "custom_nodes" / PACK.name)
    return ServerProcess(base, args=list(args)).start()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_with_pack(tmp_path_factory.mktemp("engine"))
    yield proc
    proc.stop()


class Runner:
    """Posts prompts as one websocket client and collects each run's frames and history."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.ws = WsClient(server.ws_url, uuid.uuid4().hex)
        self.ws.recv()

    def run(self, prompt: dict) -> tuple[list, dict]:
        reply = post(self.server.url, "/prompt", {"prompt": prompt, "client_id": self.ws.client_id})
        assert reply.status == 200, reply.json()
        prompt_id = reply.json()["prompt_id"]
        frames = self.ws.until_done(prompt_id)
        return frames, wait_history(self.server.url, prompt_id)


@pytest.fixture
def runner(srv) -> Iterator[Runner]:
    r = Runner(srv)
    yield r
    r.ws.close()


def ran(frames: list) -> list[str]:
    return [f["data"]["node"] for f in frames if isinstance(f, dict) and f["type"] == "executing" and f["data"]["node"]]


def cached(frames: list) -> list[str]:
    return next(f["data"]["nodes"] for f in frames if isinstance(f, dict) and f["type"] == "execution_cached")


def text(entry: dict, node: str) -> list[str]:
    return entry["outputs"][node]["text"]


def const(value: int) -> dict:
    return {"class_type": "TestIntConst", "inputs": {"value": value}}


def show(source: str) -> dict:
    return {"class_type": "TestOutput", "inputs": {"value": [source, 0]}}


def test_pack_nodes_are_registered(srv):
    import json
    import urllib.request

    with urllib.request.urlopen(srv.url + "/object_info/TestLazyMix") as resp:
        info = json.loads(resp.read())["TestLazyMix"]
    assert info["display_name"] == "Test Lazy Mix"
    assert info["input"]["required"]["a"] == ["INT", {"lazy": True, "forceInput": True}]


def test_lazy_input_not_needed_is_never_evaluated(runner):
    prompt = {
        "1": const(5), "2": {"class_type": "TestAddOne", "inputs": {"value": ["1", 0]}},
        "3": const(7), "4": {"class_type": "TestRaise", "inputs": {"value": ["3", 0]}},
        "5": {"class_type": "TestLazyMix", "inputs": {"t": 0.0, "a": ["2", 0], "b": ["4", 0]}},
        "6": show("5"),
    }
    frames, entry = runner.run(prompt)
    assert entry["status"]["status_str"] == "success"
    assert text(entry, "6") == ["6.0"]
    assert "4" not in ran(frames) and "3" not in ran(frames)
    assert ran(frames).count("5") == 2  # staged to ask, then to run

    # t = 1: now the raising branch is needed; the error is ComfyUI's and the server goes on.
    prompt["5"]["inputs"]["t"] = 1.0
    frames, entry = runner.run(prompt)
    tail = [t for t in types(frames)][-3:]
    assert tail == ["execution_error", "status", "executing"]
    error = next(f["data"] for f in frames if isinstance(f, dict) and f["type"] == "execution_error")
    assert (error["node_id"], error["node_type"]) == ("4", "TestRaise")
    assert error["exception_message"] == "deliberate failure on 7\n"
    assert error["exception_type"] == "RuntimeError" and error["current_inputs"] == {"value": [7]}
    assert entry["status"]["status_str"] == "error"


def test_expansion_and_a_recursive_loop(runner):
    prompt = {
        "1": const(10),
        "2": {"class_type": "TestRepeatAdd", "inputs": {"value": ["1", 0], "times": 3}},
        "3": show("2"),
        "4": const(0),
        "5": {"class_type": "TestCountdown", "inputs": {"value": ["4", 0], "remaining": 4}},
        "6": show("5"),
    }
    frames, entry = runner.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert text(entry, "3") == ["13"] and text(entry, "6") == ["4"]
    ephemeral = [f["data"] for f in frames if isinstance(f, dict) and f["type"] == "executing"
                 and f["data"]["node"] and f["data"]["node"] not in prompt]
    assert len(ephemeral) >= 3 + 4 * 2  # 3 adds; per loop turn one add and one countdown
    # The UI highlights the node that expanded: display_node is an id of the submitted prompt.
    assert all(d["display_node"] in prompt for d in ephemeral)
    # The same prompt again is fully cached.
    frames, entry = runner.run(prompt)
    assert ran(frames) == [] and text(entry, "6") == ["4"]


def test_blockers(runner):
    silent = {"1": const(1), "2": {"class_type": "TestGate", "inputs": {"value": ["1", 0], "open": False, "message": ""}},
              "3": {"class_type": "TestAddOne", "inputs": {"value": ["2", 0]}}, "4": show("3")}
    frames, entry = runner.run(silent)
    assert entry["status"]["status_str"] == "success" and "4" not in entry["outputs"]
    assert "execution_error" not in types(frames)

    loud = {**silent, "2": {**silent["2"], "inputs": {**silent["2"]["inputs"], "message": "closed"}}}
    frames, entry = runner.run(loud)
    errors = [f["data"] for f in frames if isinstance(f, dict) and f["type"] == "execution_error"]
    assert [(e["node_id"], e["exception_message"]) for e in errors] == [("3", "Execution Blocked: closed")]
    assert types(frames)[-3:] == ["execution_success", "status", "executing"]


def test_list_producers_and_consumers(runner):
    prompt = {
        "1": {"class_type": "TestListRange", "inputs": {"n": 4}},
        "2": {"class_type": "TestAddOne", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "TestListSum", "inputs": {"values": ["2", 0]}},
        "4": show("3"),
        "5": show("1"),
    }
    _, entry = runner.run(prompt)
    assert text(entry, "4") == ["10"]
    assert text(entry, "5") == ["0", "1", "2", "3"]


def test_async_sleepers_run_together(runner):
    prompt = {
        "1": const(1),
        "2": {"class_type": "TestAsyncSleep", "inputs": {"value": ["1", 0], "seconds": 0.3}},
        "3": {"class_type": "TestAsyncSleep", "inputs": {"value": ["1", 0], "seconds": 0.3}},
        "4": show("2"), "5": show("3"),
    }
    frames, entry = runner.run(prompt)
    assert text(entry, "4") == ["1"] and text(entry, "5") == ["1"]
    events = [(f["type"], f["data"].get("node")) for f in frames if isinstance(f, dict)
              and f["type"] in ("executing", "executed")]
    first_output = next(i for i, e in enumerate(events) if e[0] == "executed")
    started = {node for kind, node in events[:first_output] if kind == "executing"}
    assert {"2", "3"} <= started  # the second sleeper started before the first one's output ran


def test_is_changed_variants(runner):
    prompt = {
        "1": {"class_type": "TestVolatile", "inputs": {"value": 1}},
        "2": {"class_type": "TestChangedBy", "inputs": {"value": 2, "key": "k1"}},
        "3": show("1"), "4": show("2"),
    }
    runner.run(prompt)
    frames, _ = runner.run(prompt)
    assert "1" in ran(frames) and "2" not in ran(frames)
    assert "2" in cached(frames) and "1" not in cached(frames)
    prompt["2"]["inputs"]["key"] = "k2"
    frames, _ = runner.run(prompt)
    assert "2" in ran(frames)


def test_validate_inputs_variants(srv):
    odd = {"1": {"class_type": "TestEvenOnly", "inputs": {"value": 3}}, "2": show("1")}
    reply = post(srv.url, "/prompt", {"prompt": odd})
    assert reply.status == 400
    (error,) = reply.json()["node_errors"]["1"]["errors"]
    assert error["type"] == "custom_validation_failed" and "value must be even" in error["details"]
    assert post(srv.url, "/prompt", {"prompt": {**odd, "1": {**odd["1"], "inputs": {"value": 4}}}}).status == 200

    wrong = {"1": {"class_type": "TestOutput", "inputs": {"value": "x"}},
             "2": {"class_type": "TestListRange", "inputs": {"n": 1}},
             "3": {"class_type": "TestAnyInput", "inputs": {"value": ["2", 0]}}, "4": show("3")}
    assert post(srv.url, "/prompt", {"prompt": wrong}).status == 200  # INT link: accepted
    wrong["5"] = {"class_type": "TestAnyInput", "inputs": {"value": ["3", 0]}}
    wrong["6"] = show("5")
    reply = post(srv.url, "/prompt", {"prompt": wrong})
    body = reply.json()
    assert reply.status == 200 and "5" in body["node_errors"]  # the STRING link fails; the rest runs
    assert "cannot take STRING" in body["node_errors"]["5"]["errors"][0]["details"]


@pytest.mark.parametrize("flags, second_run_cached", [
    ((), ["1", "2", "3"]),
    (("--cache-none",), []),
    (("--cache-lru", "1"), ["3"]),
])
def test_cache_modes(tmp_path, flags, second_run_cached):
    server = start_with_pack(tmp_path / "base", *flags)
    try:
        runner = Runner(server)
        prompt = {"1": const(3), "2": {"class_type": "TestAddOne", "inputs": {"value": ["1", 0]}}, "3": show("2")}
        runner.run(prompt)
        frames, entry = runner.run(prompt)
        assert sorted(cached(frames)) == second_run_cached
        assert text(entry, "3") == ["4"]
        runner.ws.close()
    finally:
        server.stop()
