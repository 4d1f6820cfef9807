"""`/api/jobs`, `/api/jobs/{job_id}`: the queue and history as jobs (ComfyUI registers these with
the `/api` prefix itself, so the generic twin makes `/api/api/jobs`; there is no `/jobs`)."""

from __future__ import annotations

from aiohttp import web

from comfyserve.jobs import JobQuery, JobQueryError, finished_job, list_jobs, queued_job
from comfyserve.server.context import context_of
from comfyserve.server.responses import json_response

routes = web.RouteTableDef()


@routes.get("/api/jobs")
async def get_jobs(request: web.Request) -> web.Response:
    try:
        query = JobQuery.parse(dict(request.query))
    except JobQueryError as exc:
        return json_response({"error": str(exc)}, status=400)
    queue = context_of(request).queue
    running, pending = queue.snapshot()
    return json_response(list_jobs(running, pending, queue.history_snapshot(), query))


@routes.get("/api/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    queue = context_of(request).queue
    running = queue.running.get(job_id)
    if running is not None:
        return json_response(queued_job(running, True))
    pending = queue.pending_item(job_id)
    if pending is not None:
        return json_response(queued_job(pending, False))
    record = queue.history.get(job_id)
    if record is None:
        return json_response({"error": "Job not found"}, status=404)
    return json_response(finished_job(job_id, record, detail=True))
