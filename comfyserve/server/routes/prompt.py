"""`/prompt`, `/queue`, `/history`, `/interrupt`, `/free`: submitting and managing prompts."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from aiohttp import web

from comfyserve.compat.server import ON_PROMPT_HANDLERS, run_on_prompt_handlers
from comfyserve.engine.loader import nodes_ready
from comfyserve.engine.validate import validate_prompt
from comfyserve.queue import SENSITIVE_EXTRA_KEYS, QueueItem
from comfyserve.server.context import ServerContext, context_of
from comfyserve.server.responses import BadJson, bad_json_response, error_response, json_response, read_json

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


@routes.get("/prompt")
async def get_prompt(request: web.Request) -> web.Response:
    return json_response({"exec_info": {"queue_remaining": context_of(request).queue.remaining()}})


class Rejected(Exception):
    """A submission that must be answered with ComfyUI's 400 envelope."""

    def __init__(self, response: web.Response) -> None:
        super().__init__("rejected")
        self.response = response


async def submit(ctx: ServerContext, body: Any) -> tuple[QueueItem, dict[str, Any]]:
    """Validate and queue one POST /prompt body; raise Rejected with the 400 to send."""
    queue = ctx.queue
    number: float | int
    if isinstance(body, dict) and "number" in body:
        try:
            number = float(body["number"])
        except (TypeError, ValueError):
            raise Rejected(
                error_response("invalid_number", "Invalid 'number'", f"'number' must be a number, got {body['number']!r}.")
            ) from None
    else:
        number = queue.next_number()
        if isinstance(body, dict) and body.get("front"):
            number = -number
    if not isinstance(body, dict) or "prompt" not in body:
        raise Rejected(error_response("no_prompt", "No prompt provided", "No prompt provided"))
    prompt = body["prompt"]
    if not isinstance(prompt, dict):
        raise Rejected(
            error_response(
                "invalid_prompt",
                "Invalid prompt",
                f"'prompt' must be a JSON object mapping node ids to nodes, got {type(prompt).__name__}.",
            )
        )
    extra_data = body.get("extra_data", {})
    if not isinstance(extra_data, dict):
        raise Rejected(error_response("invalid_prompt", "Invalid extra_data", "'extra_data' must be a JSON object."))
    targets = body.get("partial_execution_targets")
    if targets is not None and not (isinstance(targets, list) and all(isinstance(t, (str, int)) for t in targets)):
        raise Rejected(
            error_response(
                "invalid_prompt", "Invalid partial_execution_targets", "'partial_execution_targets' must be a list of node ids."
            )
        )
    prompt_id = str(body.get("prompt_id") or uuid.uuid4())
    if queue.pending_item(prompt_id) is not None or prompt_id in queue.running:
        raise Rejected(
            error_response("duplicate_prompt_id", "Duplicate prompt_id", f"A prompt with id {prompt_id!r} is already queued.")
        )
    if queue.remaining() >= ctx.settings.max_queue_size:
        raise Rejected(
            error_response(
                "queue_full",
                "Queue is full",
                f"The queue already holds {queue.remaining()} prompts (limit {ctx.settings.max_queue_size}).",
                status=429,
            )
        )
    await nodes_ready(ctx)
    result = validate_prompt(prompt, ctx.registry, [str(t) for t in targets] if targets is not None else None)
    if not result.ok:
        raise Rejected(json_response({"error": result.error, "node_errors": result.node_errors}, status=400))
    extra_data = dict(extra_data)
    if "client_id" in body:
        extra_data["client_id"] = body["client_id"]
    sensitive = {key: extra_data.pop(key) for key in SENSITIVE_EXTRA_KEYS if key in extra_data}
    extra_data["create_time"] = int(time.time() * 1000)
    item = QueueItem(number, prompt_id, prompt, extra_data, result.outputs_to_execute, sensitive=sensitive)
    queue.put(item)
    return item, result.node_errors


@routes.post("/prompt")
async def post_prompt(request: web.Request) -> web.Response:
    ctx = context_of(request)
    try:
        body = await read_json(request, expect=None)
    except BadJson as exc:
        return bad_json_response(exc)
    handlers = ctx.extras.get(ON_PROMPT_HANDLERS)
    if handlers:  # custom nodes' PromptServer.add_on_prompt_handler, as ComfyUI runs them
        body = run_on_prompt_handlers(handlers, body)
    try:
        item, node_errors = await submit(ctx, body)
    except Rejected as rejected:
        return rejected.response
    return json_response({"prompt_id": item.prompt_id, "number": item.number, "node_errors": node_errors})


@routes.get("/queue")
async def get_queue(request: web.Request) -> web.Response:
    running, pending = context_of(request).queue.snapshot()
    return json_response(
        {"queue_running": [i.as_list() for i in running], "queue_pending": [i.as_list() for i in pending]}
    )


def _id_list(body: dict[str, Any], key: str) -> list[str] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise BadJson(f"'{key}' must be a list of prompt ids.")
    return [str(v) for v in value]


@routes.post("/queue")
async def post_queue(request: web.Request) -> web.Response:
    queue = context_of(request).queue
    try:
        body = await read_json(request)
        to_delete = _id_list(body, "delete")
    except BadJson as exc:
        return bad_json_response(exc)
    if body.get("clear"):
        queue.clear_pending()
    if to_delete is not None:
        queue.delete_pending(to_delete)
    return web.Response()


def _parse_int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadJson(f"Query parameter '{name}' must be an integer, got {raw!r}.") from None


@routes.get("/history")
async def get_history(request: web.Request) -> web.Response:
    queue = context_of(request).queue
    try:
        max_items = _parse_int(request, "max_items")
        offset = _parse_int(request, "offset")
    except BadJson as exc:
        return error_response("invalid_query", "Invalid query parameter", str(exc))
    items = queue.history_snapshot()
    if offset is None:
        offset = -1
    if offset < 0 and max_items is not None:
        offset = max(len(items) - max_items, 0)
    elif offset < 0:
        offset = 0
    end = None if max_items is None else offset + max_items
    selected = items[offset:end]
    return json_response({prompt_id: record.entry for prompt_id, record in selected})


@routes.get("/history/{prompt_id}")
async def get_history_entry(request: web.Request) -> web.Response:
    prompt_id = request.match_info["prompt_id"]
    record = context_of(request).queue.history.get(prompt_id)
    return json_response({prompt_id: record.entry} if record is not None else {})


@routes.post("/history")
async def post_history(request: web.Request) -> web.Response:
    queue = context_of(request).queue
    try:
        body = await read_json(request)
        to_delete = _id_list(body, "delete")
    except BadJson as exc:
        return bad_json_response(exc)
    if body.get("clear"):
        queue.clear_history()
    if to_delete is not None:
        queue.delete_history(to_delete)
    return web.Response()


@routes.post("/interrupt")
async def post_interrupt(request: web.Request) -> web.Response:
    queue = context_of(request).queue
    prompt_id = None
    try:
        body = await read_json(request)
        if body.get("prompt_id") is not None:
            prompt_id = str(body["prompt_id"])
    except BadJson:
        pass  # ComfyUI treats an empty or unreadable body as a global interrupt
    if not queue.interrupt(prompt_id) and prompt_id is not None:
        log.info("interrupt for %s ignored: it is not running", prompt_id)
    return web.Response()


@routes.post("/free")
async def post_free(request: web.Request) -> web.Response:
    """Ask the worker to unload models / drop cached outputs once the current prompt ends."""
    queue = context_of(request).queue
    try:
        body = await read_json(request)
    except BadJson as exc:
        return bad_json_response(exc)
    queue.request_free(bool(body.get("unload_models")), bool(body.get("free_memory")))
    return web.Response()
