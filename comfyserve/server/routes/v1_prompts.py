"""`/api/v1/prompts`: run a prompt and block until it is done (the seed OpenAPI's API).

POST answers the last saved image (`Accept: image/png`) or `{urls, outputs}` as JSON, with
a `Digest` of the prompt; 204 when nothing was saved; 400 invalid, 429 queue full, 500 the
prompt failed, 507 the disk is full. GET answers the last prompt that ran.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import tempfile
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from comfyserve.paths import PathEscape, safe_join
from comfyserve.queue import HistoryRecord
from comfyserve.server.context import ServerContext, context_of
from comfyserve.server.responses import error_response, json_response
from comfyserve.server.routes.prompt import Rejected, submit

api_only_routes = web.RouteTableDef()


@api_only_routes.get("/api/v1/prompts")
async def get_last_prompt(request: web.Request) -> web.Response:
    history = context_of(request).queue.history
    if not history:
        return error_response("no_prompts", "No prompt has run yet", "", status=404)
    last = next(reversed(history.values()))
    return json_response(last.entry["prompt"][2])


def prompt_digest(prompt: dict[str, Any]) -> str:
    """SHA-256 of the prompt as compact JSON, as the seed spec's clients compute it."""
    return hashlib.sha256(json.dumps(prompt, separators=(",", ":")).encode()).hexdigest()


def _unwrap(body: Any) -> Any:
    # The spec's body is the node map itself; `{"prompt": {...}}` (POST /prompt's shape) also works.
    if isinstance(body, dict) and isinstance(body.get("prompt"), dict) and "class_type" not in body["prompt"]:
        return body["prompt"]
    return body


async def _read_body(request: web.Request, ctx: ServerContext) -> Any:
    if request.content_type.startswith("multipart/"):
        return await _read_multipart(request, ctx)
    raw = await request.read()
    try:
        return _unwrap(json.loads(raw))
    except ValueError as exc:
        raise Rejected(error_response("invalid_json", "Invalid request body", f"Body is not valid JSON: {exc}")) from exc


async def _read_multipart(request: web.Request, ctx: ServerContext) -> Any:
    """A `prompt` field plus files saved into input/ under their own names."""
    prompt: Any = None
    reader = await request.multipart()
    async for part in reader:
        if part.name == "prompt" and not part.filename:
            try:
                prompt = _unwrap(json.loads(await part.text()))
            except ValueError as exc:
                raise Rejected(
                    error_response("invalid_json", "Invalid prompt field", f"'prompt' is not valid JSON: {exc}")
                ) from exc
        elif part.filename:
            name = os.path.basename(part.filename)
            try:
                target = safe_join(ctx.folders.input, name)
            except PathEscape as exc:
                raise Rejected(error_response("invalid_filename", "Invalid file name", str(exc))) from exc
            if not name or target.parent != ctx.folders.input.resolve():
                raise Rejected(error_response("invalid_filename", "Invalid file name", f"{part.filename!r}"))
            data = await part.read()
            _write_atomic(target, data)
    if prompt is None:
        raise Rejected(error_response("no_prompt", "No prompt provided", "The multipart body has no 'prompt' field."))
    return prompt


def _write_atomic(target, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _saved_images(outputs: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        image
        for ui in outputs.values()
        for image in (ui.get("images") or [])
        if isinstance(image, dict) and image.get("type") == "output"
    ]


def _view_url(request: web.Request, image: dict[str, Any]) -> str:
    query = urlencode({"filename": image["filename"], "subfolder": image.get("subfolder", ""), "type": "output"})
    return f"{request.scheme}://{request.host}/view?{query}"


@api_only_routes.post("/api/v1/prompts")
async def post_prompt_and_wait(request: web.Request) -> web.StreamResponse:
    ctx = context_of(request)
    try:
        prompt = await _read_body(request, ctx)
        item, _ = await submit(ctx, {"prompt": prompt})
    except Rejected as rejected:
        return rejected.response
    loop = asyncio.get_running_loop()
    done: asyncio.Future[HistoryRecord] = loop.create_future()
    ctx.queue.on_done(item.prompt_id, lambda record: loop.call_soon_threadsafe(_resolve, done, record))
    record = await done
    headers = {"Digest": f"SHA256={prompt_digest(prompt)}"}
    status = record.entry["status"]
    if status["status_str"] != "success":
        return _failure_response(status, headers)
    outputs = record.entry["outputs"]
    images = _saved_images(outputs)
    if not images:
        return web.Response(status=204, headers=headers)
    if "image/png" in request.headers.get("Accept", "") and "application/json" not in request.headers.get("Accept", ""):
        last = images[-1]
        folder = ctx.folders.output
        path = safe_join(folder, last.get("subfolder", ""), last["filename"])
        headers["Content-Disposition"] = f"filename={last['filename']}"
        return web.Response(body=path.read_bytes(), content_type="image/png", headers=headers)
    return json_response({"urls": [_view_url(request, i) for i in images], "outputs": outputs}, headers=headers)


def _resolve(future: asyncio.Future, record: HistoryRecord) -> None:
    if not future.done():
        future.set_result(record)


def _failure_response(status: dict[str, Any], headers: dict[str, str]) -> web.Response:
    event, data = status["messages"][-1] if status["messages"] else ("execution_error", {})
    if event == "execution_interrupted":
        message, details = "Prompt was interrupted", f"Interrupted at node {data.get('node_id')}."
        return error_response("execution_interrupted", message, details, status=500, extra_info=data)
    exc_message = str(data.get("exception_message", ""))
    disk_full = data.get("exception_type") in ("OSError", "IOError") and (
        "No space left" in exc_message or f"[Errno {errno.ENOSPC}]" in exc_message
    )
    response = error_response(
        "execution_error",
        "Prompt failed while running",
        f"{data.get('node_type')} (node {data.get('node_id')}): {exc_message.strip()}",
        status=507 if disk_full else 500,
        extra_info=data,
    )
    response.headers.update(headers)
    return response
