"""`/api/jobs` and `/api/jobs/{id}` against a real server, held to ComfyUI's answers
(routes_basic.json on an empty server, queue_history.json and ws_runs_tiny.json with jobs)."""

from __future__ import annotations

import pytest

from tests.api.client import get, post, request, wait_history
from tests.api.test_durability import wait_running
from tests.api.workflows import slow, tiny
from tests.conftest import reference

BASIC = reference("routes_basic.json")
QUEUE = reference("queue_history.json")
RUNS = reference("ws_runs_tiny.json")

EMPTY_SERVER_CASES = [name for name in BASIC if "jobs" in name]


@pytest.mark.parametrize("name", EMPTY_SERVER_CASES)
def test_empty_server_answers_as_comfyui(server, name):
    """Run first in this module: the server has no jobs, so bodies must match byte for byte."""
    record = BASIC[name]
    reply = request(server.url, record["request"]["method"], record["request"]["path"])
    assert reply.status == record["response"]["status"]
    assert reply.headers["Content-Type"] == "application/json; charset=utf-8"
    expected = record["response"]["body"]["json"]
    if name == "GET /api/jobs?status=bogus":
        # Ours also lists `cancelled`, which we accept and ComfyUI 0.8 does not.
        expected = {"error": expected["error"].replace("completed, failed", "completed, failed, cancelled")}
    assert reply.json() == expected


def test_jobs_is_not_served_without_the_prefix(server):
    assert get(server.url, "/jobs").status == 404


def _keys(job: dict) -> list[str]:
    return list(job)


def test_queued_and_finished_jobs(server):
    # SaveImage and PreviewImage: two files, and the saved one is the preview (as in ComfyUI).
    both = dict(tiny(1, prefix="jobs"), **{"4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}})
    done = post(server.url, "/prompt", {"prompt": both, "prompt_id": "job-done"}).json()
    wait_history(server.url, "job-done")
    running = post(server.url, "/prompt", {"prompt": slow(2, steps=1000), "prompt_id": "job-running"}).json()
    wait_running(server.url, "job-running")
    pending = [post(server.url, "/prompt", {"prompt": tiny(10 + i), "prompt_id": f"job-pending-{i}"}).json()
               for i in range(3)]
    try:
        body = get(server.url, "/api/jobs").json()
        ref = QUEUE["GET /api/jobs (pending+in_progress+history)"]["response"]["body"]["json"]
        assert set(body) == set(ref) and set(body["pagination"]) == set(ref["pagination"])
        by_id = {job["id"]: job for job in body["jobs"]}
        ref_pending = next(j for j in ref["jobs"] if j["status"] == "pending")
        ref_running = next(j for j in ref["jobs"] if j["status"] == "in_progress")
        assert _keys(by_id["job-pending-0"]) == _keys(ref_pending)
        assert _keys(by_id["job-running"]) == _keys(ref_running)
        assert by_id["job-running"]["status"] == "in_progress"
        assert by_id["job-running"]["priority"] == running["number"]
        assert [by_id[p["prompt_id"]]["priority"] for p in pending] == [p["number"] for p in pending]
        # Newest first by default.
        created = [job["create_time"] for job in body["jobs"]]
        assert created == sorted(created, reverse=True)
        assert body["pagination"] == {"offset": 0, "limit": None, "total": 5, "has_more": False}

        page = get(server.url, "/api/jobs?status=pending&limit=2").json()
        assert [j["status"] for j in page["jobs"]] == ["pending", "pending"]
        assert page["pagination"] == {"offset": 0, "limit": 2, "total": 3, "has_more": True}

        detail = get(server.url, "/api/jobs/job-pending-1").json()
        assert detail == by_id["job-pending-1"]

        finished = get(server.url, "/api/jobs/job-done").json()
        ref_done = RUNS["partly cached (only SaveImage prefix changed)"]["job"]["response"]["body"]["json"]
        assert _keys(finished) == [k for k in _keys(ref_done)]
        assert finished["status"] == "completed" and finished["priority"] == done["number"]
        assert finished["outputs_count"] == 2
        assert finished["preview_output"] == {
            "filename": "jobs_00001_.png", "subfolder": "", "type": "output", "nodeId": "3", "mediaType": "images",
        }
        assert finished["execution_status"]["status_str"] == "success"
        assert finished["workflow"]["prompt"] == both
        assert finished["execution_start_time"] <= finished["execution_end_time"]
    finally:
        post(server.url, "/queue", {"clear": True})
        post(server.url, "/interrupt", {})
        wait_history(server.url, "job-running")


def test_failed_and_interrupted_jobs(server):
    (server.base / "input" / "not-an-image.png").write_text("not an image")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "not-an-image.png"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    assert post(server.url, "/prompt", {"prompt": prompt, "prompt_id": "job-error"}).status == 200
    wait_history(server.url, "job-error")
    failed = get(server.url, "/api/jobs/job-error").json()
    ref = RUNS["runtime error (LoadImage of a non-image file)"]["job"]["response"]["body"]["json"]
    assert _keys(failed) == _keys(ref)
    assert failed["status"] == "failed"
    assert set(failed["execution_error"]) == set(ref["execution_error"])
    assert failed["execution_error"]["node_type"] == "LoadImage"

    # The interrupted job from the previous test: `failed` as in ComfyUI 0.8, and selected by the
    # `cancelled` filter newer web UIs send (ComfyUI 0.8 answers that filter with a 400).
    interrupted = get(server.url, "/api/jobs/job-running").json()
    assert interrupted["status"] == "failed" and "execution_error" not in interrupted
    cancelled = get(server.url, "/api/jobs?status=cancelled").json()
    assert [j["id"] for j in cancelled["jobs"]] == ["job-running"]
    finished = get(server.url, "/api/jobs?status=completed,failed,cancelled").json()
    assert {j["id"] for j in finished["jobs"]} >= {"job-done", "job-error", "job-running"}
    assert all(j["status"] in ("completed", "failed") for j in finished["jobs"])


def test_sorting_and_paging(server):
    asc = get(server.url, "/api/jobs?sort_order=asc").json()["jobs"]
    desc = get(server.url, "/api/jobs").json()["jobs"]
    assert [j["create_time"] for j in asc] == sorted(j["create_time"] for j in asc)
    assert sorted(j["id"] for j in asc) == sorted(j["id"] for j in desc)
    total = len(desc)
    page = get(server.url, f"/api/jobs?limit=2&offset={total - 1}").json()
    assert len(page["jobs"]) == 1 and page["pagination"]["has_more"] is False
    by_duration = get(server.url, "/api/jobs?sort_by=execution_duration").json()["jobs"]
    durations = [j.get("execution_end_time", 0) - j.get("execution_start_time", 0) for j in by_duration]
    assert durations == sorted(durations, reverse=True)
