"""The job view's pure logic: query parsing, output summaries, filtering and paging."""

from __future__ import annotations

import pytest

from comfyserve.jobs import JobQuery, JobQueryError, finished_job, list_jobs, outputs_summary
from comfyserve.queue import HistoryRecord, QueueItem


def record(number: int, status: str, created: int, start: int, end: int, messages=(), outputs=None) -> HistoryRecord:
    entry = {
        "prompt": [number, f"p{number}", {}, {"create_time": created}, []],
        "outputs": outputs or {},
        "status": {"status_str": status, "completed": status == "success", "messages": list(messages)},
        "meta": {},
    }
    return HistoryRecord(entry, {"create_time": created, "execution_start_time": start, "execution_end_time": end})


def test_query_defaults_and_errors():
    assert JobQuery.parse({}) == JobQuery()
    assert JobQuery.parse({"offset": "-5"}).offset == 0
    assert JobQuery.parse({"status": "completed,cancelled"}).statuses == {"completed", "cancelled"}
    for query, message in [
        ({"status": "bogus"}, "Invalid status value(s): bogus."),
        ({"sort_by": "name"}, "sort_by must be"),
        ({"sort_order": "up"}, "sort_order must be"),
        ({"limit": "0"}, "limit must be a positive integer"),
        ({"limit": "abc"}, "limit must be an integer"),
        ({"offset": "abc"}, "offset must be an integer"),
    ]:
        with pytest.raises(JobQueryError, match=message.replace("(", r"\(").replace(")", r"\)")):
            JobQuery.parse(query)


def test_outputs_summary_counts_files_and_prefers_saved_images():
    outputs = {
        "4": {"images": [{"filename": "t.png", "subfolder": "", "type": "temp"}]},
        "3": {"images": [{"filename": "a.png", "subfolder": "s", "type": "output"},
                         {"filename": "b.png", "subfolder": "s", "type": "output"}]},
        "5": {"text": ["not a file"]},
    }
    count, preview = outputs_summary(outputs)
    assert count == 3
    assert preview == {"filename": "a.png", "subfolder": "s", "type": "output", "nodeId": "3", "mediaType": "images"}
    assert outputs_summary({"4": outputs["4"]})[1]["type"] == "temp"
    assert outputs_summary({}) == (0, None)


def test_failed_job_carries_its_error_and_interrupted_matches_cancelled():
    error = ["execution_error", {"node_id": "1", "exception_message": "boom"}]
    failed = finished_job("p1", record(1, "error", 10, 11, 12, [error]), detail=False)
    assert failed["status"] == "failed" and failed["execution_error"]["exception_message"] == "boom"
    interrupted = record(2, "error", 20, 21, 30, [["execution_interrupted", {"node_id": "3"}]])
    done = record(3, "success", 30, 31, 32)
    history = [("p1", record(1, "error", 10, 11, 12, [error])), ("p2", interrupted), ("p3", done)]
    body = list_jobs([], [], history, JobQuery.parse({"status": "cancelled"}))
    assert [j["id"] for j in body["jobs"]] == ["p2"]
    assert body["jobs"][0]["status"] == "failed"
    body = list_jobs([], [], history, JobQuery.parse({"status": "failed"}))
    assert {j["id"] for j in body["jobs"]} == {"p1", "p2"}


def test_sort_and_page():
    pending = QueueItem(9, "q9", {}, {"create_time": 100}, [])
    running = QueueItem(8, "q8", {}, {"create_time": 90}, [])
    history = [("p1", record(1, "success", 10, 11, 50)), ("p2", record(2, "success", 20, 21, 22))]
    body = list_jobs([running], [pending], history, JobQuery())
    assert [j["id"] for j in body["jobs"]] == ["q9", "q8", "p2", "p1"]
    assert [j["status"] for j in body["jobs"][:2]] == ["pending", "in_progress"]
    body = list_jobs([running], [pending], history, JobQuery.parse({"sort_by": "execution_duration"}))
    assert [j["id"] for j in body["jobs"]][:2] == ["p1", "p2"]
    body = list_jobs([running], [pending], history, JobQuery.parse({"limit": "2", "offset": "1", "sort_order": "asc"}))
    assert [j["id"] for j in body["jobs"]] == ["p2", "q8"]
    assert body["pagination"] == {"offset": 1, "limit": 2, "total": 4, "has_more": True}
