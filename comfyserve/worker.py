"""The single worker: take the next prompt, execute it, record history, then tell clients.

Order at the end of a prompt, as ComfyUI clients rely on: the history entry is written,
then the terminal event (`execution_success` / `_error` / `_interrupted`) goes to the
submitting client, then `status` to everyone, then `executing {node: null}`.
"""

from __future__ import annotations

import json
import logging
import struct
from typing import TYPE_CHECKING, Any

from comfyserve.engine import interrupt, previews
from comfyserve.engine.cache import OutputCache
from comfyserve.engine.execute import Executor, PromptJob
from comfyserve.server.hub import PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA

if TYPE_CHECKING:
    from comfyserve.queue import PromptQueue, QueueItem
    from comfyserve.server.context import ServerContext

log = logging.getLogger(__name__)


class ClientSink:
    """Execution events go to the submitting client only; without one, only progress_state
    is sent, to everyone (ComfyUI's addressing)."""

    def __init__(self, queue: PromptQueue, client_id: str | None, prompt_id: str) -> None:
        self.queue = queue
        self.prompt_id = prompt_id
        self.hub = queue.hub
        self.client_id = client_id

    def send(self, event: str, data: dict[str, Any]) -> None:
        if event == "executing":
            self.queue.current_node = data.get("node")
        if self.client_id is not None:
            self.hub.send(event, data, self.client_id)

    def progress_state(self, event: str, data: dict[str, Any]) -> None:
        self.hub.send(event, data, self.client_id)

    def preview(self, node_id: str, preview: tuple[str, bytes], before_progress: bool) -> None:
        """A binary preview frame in the layout this client understands (ComfyUI's types 1 and 4)."""
        if self.client_id is None:
            return
        media_type, image = preview
        wants_metadata = bool(self.hub.client_features.get(self.client_id, {}).get("supports_preview_metadata"))
        if wants_metadata and before_progress:
            metadata = json.dumps({
                "node_id": node_id,
                "prompt_id": self.prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
                "image_type": media_type,
            }).encode()
            payload = struct.pack(">I", len(metadata)) + metadata + image
            self.hub.send_bytes(PREVIEW_IMAGE_WITH_METADATA, payload, self.client_id)
        elif not wants_metadata and not before_progress:
            image_format = 2 if media_type == "image/png" else 1
            self.hub.send_bytes(PREVIEW_IMAGE, struct.pack(">I", image_format) + image, self.client_id)


def run_worker(queue: PromptQueue, ctx: ServerContext) -> None:
    """Worker thread body: runs until the queue is stopped."""
    settings = ctx.settings
    executor = Executor(
        registry=ctx.registry,
        cache=OutputCache(mode=settings.cache_mode, lru_size=settings.cache_lru),
        free_memory=lambda: _unload_models(ctx),
    )
    ctx.extras["executor"] = executor
    previews.configure(settings.preview_method, settings.preview_size)
    interrupt.use_flag(queue.interrupt_requested)
    while not queue.stopping:
        item = queue.take(timeout=1.0)
        apply_free_requests(queue, executor, ctx)
        if item is None:
            continue
        try:
            run_one(queue, executor, item)
        except Exception:  # never let one prompt kill the worker
            log.exception("worker failed on prompt %s", item.prompt_id)


def _unload_models(ctx: ServerContext) -> None:
    unload = ctx.extras.get("unload_models")
    if unload is not None:
        unload(unload_models=True, free_memory=True)


def apply_free_requests(queue: PromptQueue, executor: Executor, ctx: ServerContext) -> None:
    """Carry out POST /free between prompts, on the thread that owns the cache and models."""
    requests = queue.take_free_requests()
    if requests.get("free_memory"):
        executor.cache.clear()
    unload = ctx.extras.get("unload_models")
    if requests and unload is not None:
        unload(**requests)


def run_one(queue: PromptQueue, executor: Executor, item: QueueItem) -> None:
    queue.send_status()
    sink = ClientSink(queue, item.client_id, item.prompt_id)
    job = PromptJob(item.prompt_id, item.prompt, item.extra_data, item.outputs_to_execute)
    result = executor.execute(job, sink)
    entry = {
        "prompt": item.as_list(),
        "outputs": result.outputs,
        "status": {"status_str": result.status_str, "completed": result.completed, "messages": result.messages},
        "meta": result.meta,
    }
    queue.finish(item, entry)
    event, data = result.final_event
    if event == "execution_interrupted" and item.client_id is None:
        queue.hub.send(event, data)  # ComfyUI broadcasts an interrupt of a prompt no client posted
    else:
        sink.send(event, data)
    queue.send_status()
    sink.send("executing", {"node": None, "prompt_id": item.prompt_id})
