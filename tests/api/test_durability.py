"""kill -9 with prompts pending: nothing is lost; a prompt cut off twice is marked failed."""

from __future__ import annotations

import time

from tests.api.client import get, post, wait_history
from tests.api.workflows import slow, tiny


def wait_running(url: str, prompt_id: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = get(url, "/queue").json()["queue_running"]
        if any(item[1] == prompt_id for item in running):
            return
        time.sleep(0.01)
    raise AssertionError(f"{prompt_id} never started")


def submit(url: str, prompt: dict, prompt_id: str) -> None:
    reply = post(url, "/prompt", {"prompt": prompt, "prompt_id": prompt_id})
    assert reply.status == 200, reply.body


def test_kill_9_loses_nothing(make_server, tmp_path):
    base = tmp_path / "base"
    first = make_server(base=base)
    submit(first.url, tiny(1), "done-before")
    wait_history(first.url, "done-before")

    submit(first.url, slow(2, steps=1000), "slow")  # killed twice, never finishes
    wait_running(first.url, "slow")
    for i in range(3):
        submit(first.url, tiny(10 + i), f"pending-{i}")
    assert get(first.url, "/prompt").json()["exec_info"]["queue_remaining"] == 4
    first.kill()

    # First restart: the cut-off prompt is queued again (it runs first: lowest number), then killed again.
    second = make_server(base=base)
    assert "done-before" in get(second.url, "/history").json()
    wait_running(second.url, "slow")
    queue = get(second.url, "/queue").json()
    assert sorted(item[1] for item in queue["queue_pending"]) == ["pending-0", "pending-1", "pending-2"]
    second.kill()

    # Second restart: the prompt that was cut off twice is failed; every pending prompt runs.
    third = make_server(base=base)
    failed = wait_history(third.url, "slow")
    assert failed["status"]["status_str"] == "error"
    assert failed["status"]["completed"] is False
    kind, data = failed["status"]["messages"][-1]
    assert kind == "execution_error"
    assert "stopped twice" in data["exception_message"]
    for i in range(3):
        entry = wait_history(third.url, f"pending-{i}")
        assert entry["status"]["status_str"] == "success"
    history = get(third.url, "/history").json()
    assert list(history)[0] == "done-before"
    assert get(third.url, "/prompt").json()["exec_info"]["queue_remaining"] == 0


def test_prompt_cut_off_once_runs_again(make_server, tmp_path):
    base = tmp_path / "base"
    first = make_server(base=base)
    submit(first.url, slow(3, steps=30), "slow-once")
    wait_running(first.url, "slow-once")
    first.kill()
    second = make_server(base=base)
    entry = wait_history(second.url, "slow-once", timeout=60)
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"]["9"]["images"][0]["filename"].startswith("slow3_")
