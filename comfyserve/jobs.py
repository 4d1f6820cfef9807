"""The job view of the queue and the history, as ComfyUI's `/api/jobs` shows it.

A job is one prompt at any stage: `pending`, `in_progress`, `completed` or `failed` (an error or
an interrupt). Newer web UIs also ask for `cancelled`; ComfyUI 0.8 answers that with a 400, we
accept it as a filter for interrupted jobs, which keep ComfyUI 0.8's status `failed`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from comfyserve.queue import HistoryRecord, QueueItem

STATUSES = ("pending", "in_progress", "completed", "failed")
FILTER_STATUSES = (*STATUSES, "cancelled")
SORT_KEYS = ("created_at", "execution_duration")
SORT_ORDERS = ("asc", "desc")
# Output keys that hold files a client can show (`mediaType` of a preview).
PREVIEWABLE = ("images", "video", "audio")


class JobQueryError(ValueError):
    """A bad `/api/jobs` query parameter; the message is ComfyUI's."""


@dataclass(frozen=True)
class JobQuery:
    """The parsed `/api/jobs` query."""

    statuses: frozenset[str] | None = None
    sort_by: str = "created_at"
    descending: bool = True
    limit: int | None = None
    offset: int = 0

    @classmethod
    def parse(cls, query: dict[str, str]) -> JobQuery:
        statuses = None
        if query.get("status"):
            wanted = [s.strip() for s in query["status"].split(",") if s.strip()]
            bad = [s for s in wanted if s not in FILTER_STATUSES]
            if bad:
                raise JobQueryError(
                    f"Invalid status value(s): {', '.join(bad)}. Valid values: {', '.join(FILTER_STATUSES)}"
                )
            statuses = frozenset(wanted)
        sort_by = query.get("sort_by", "created_at")
        if sort_by not in SORT_KEYS:
            raise JobQueryError("sort_by must be 'created_at' or 'execution_duration'")
        sort_order = query.get("sort_order", "desc")
        if sort_order not in SORT_ORDERS:
            raise JobQueryError("sort_order must be 'asc' or 'desc'")
        limit = None
        if "limit" in query:
            limit = _integer(query["limit"], "limit")
            if limit <= 0:
                raise JobQueryError("limit must be a positive integer")
        offset = max(_integer(query["offset"], "offset"), 0) if "offset" in query else 0
        return cls(statuses, sort_by, sort_order == "desc", limit, offset)


def _integer(raw: str, name: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise JobQueryError(f"{name} must be an integer") from None


def _is_interrupted(record: HistoryRecord) -> bool:
    return any(m and m[0] == "execution_interrupted" for m in record.entry["status"].get("messages", []))


def _execution_error(record: HistoryRecord) -> dict[str, Any] | None:
    for message in record.entry["status"].get("messages", []):
        if message and message[0] == "execution_error":
            return message[1]
    return None


def outputs_summary(outputs: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    """(how many files the outputs hold, the one to preview: a saved output before a temp one)."""
    count = 0
    first: dict[str, Any] | None = None
    saved: dict[str, Any] | None = None
    for node_id, ui in outputs.items():
        if not isinstance(ui, dict):
            continue
        for media_type, items in ui.items():
            if not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, dict) or "filename" not in item:
                    continue
                count += 1
                if media_type not in PREVIEWABLE:
                    continue
                preview = {
                    "filename": item["filename"],
                    "subfolder": item.get("subfolder", ""),
                    "type": item.get("type", "output"),
                    "nodeId": node_id,
                    "mediaType": media_type,
                }
                first = first or preview
                if saved is None and preview["type"] == "output":
                    saved = preview
    return count, saved or first


def queued_job(item: QueueItem, running: bool) -> dict[str, Any]:
    """A pending or running prompt as a job."""
    return {
        "id": item.prompt_id,
        "status": "in_progress" if running else "pending",
        "priority": item.number,
        "create_time": item.create_time,
        "outputs_count": 0,
    }


def finished_job(prompt_id: str, record: HistoryRecord, detail: bool) -> dict[str, Any]:
    """A history entry as a job; `detail` adds outputs, status messages and the workflow."""
    entry = record.entry
    number, _, prompt, extra_data, _ = entry["prompt"]
    job: dict[str, Any] = {
        "id": prompt_id,
        "status": "completed" if entry["status"].get("status_str") == "success" else "failed",
        "priority": number,
        "create_time": record.timing.get("create_time", extra_data.get("create_time")),
        "execution_start_time": record.timing.get("execution_start_time"),
        "execution_end_time": record.timing.get("execution_end_time"),
    }
    error = _execution_error(record)
    if error is not None:
        job["execution_error"] = error
    count, preview = outputs_summary(entry.get("outputs", {}))
    job["outputs_count"] = count
    if preview is not None:
        job["preview_output"] = preview
    if detail:
        job["outputs"] = entry.get("outputs", {})
        job["execution_status"] = entry["status"]
        job["workflow"] = {"prompt": prompt, "extra_data": extra_data}
    return {k: v for k, v in job.items() if v is not None or k in ("create_time",)}


@dataclass
class _Row:
    job: dict[str, Any]
    statuses: frozenset[str]

    @property
    def created(self) -> float:
        return self.job.get("create_time") or 0

    @property
    def duration(self) -> float:
        start, end = self.job.get("execution_start_time"), self.job.get("execution_end_time")
        return (end - start) if start is not None and end is not None else 0


def list_jobs(
    running: Iterable[QueueItem],
    pending: Iterable[QueueItem],
    history: Iterable[tuple[str, HistoryRecord]],
    query: JobQuery,
) -> dict[str, Any]:
    """The `/api/jobs` body: the selected page of jobs and its pagination."""
    rows = [_Row(queued_job(i, True), frozenset({"in_progress"})) for i in running]
    rows += [_Row(queued_job(i, False), frozenset({"pending"})) for i in pending]
    for prompt_id, record in history:
        job = finished_job(prompt_id, record, detail=False)
        tags = {job["status"]} | ({"cancelled"} if _is_interrupted(record) else set())
        rows.append(_Row(job, frozenset(tags)))
    if query.statuses is not None:
        rows = [r for r in rows if r.statuses & query.statuses]
    key = (lambda r: r.duration) if query.sort_by == "execution_duration" else (lambda r: r.created)
    rows.sort(key=key, reverse=query.descending)
    total = len(rows)
    end = None if query.limit is None else query.offset + query.limit
    page = rows[query.offset:end]
    return {
        "jobs": [r.job for r in page],
        "pagination": {
            "offset": query.offset,
            "limit": query.limit,
            "total": total,
            "has_more": end is not None and end < total,
        },
    }
