"""The single worker: take the next prompt, execute it, record history, then tell clients.

Order at the end of a prompt, as ComfyUI clients rely on: the history entry is written,
then the terminal event (`execution_success` / `_error` / `_interrupted`) goes to the
submitting client, then `status` to everyone, then `executing {node: null}`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from comfyserve.engine import interrupt
from comfyserve.engine.cache import OutputCache
from comfyserve.engine.execute import Executor, PromptJob

if TYPE_CHECKING:
    from comfyserve.queue import PromptQueue, QueueItem
    from comfyserve.server.context import ServerContext

log = logging.getLogger(__name__)


class ClientSink:
    """Execution events go to the submitting client only; without one, only progress_state
    is sent, to everyone (ComfyUI's addressing)."""

    def __init__(self, queue: PromptQueue, client_id: str | None) -> None:
        self.queue = queue
        self.hub = queue.hub
        self.client_id = client_id

    def send(self, event: str, data: dict[str, Any]) -> None:
        if event == "executing":
            self.queue.current_node = data.get("node")
        if self.client_id is not None:
            self.hub.send(event, data, self.client_id)

    def progress_state(self, event: str, data: dict[str, Any]) -> None:
        self.hub.send(event, data, self.client_id)


def run_worker(queue: PromptQueue, ctx: ServerContext) -> None:
    """Worker thread body: runs until the queue is stopped."""
    settings = ctx.settings
    executor = Executor(
        registry=ctx.registry,
        cache=OutputCache(mode=settings.cache_mode, lru_size=settings.cache_lru),
    )
    ctx.extras["executor"] = executor
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
    sink = ClientSink(queue, item.client_id)
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
    sink.send(event, data)
    queue.send_status()
    sink.send("executing", {"node": None, "prompt_id": item.prompt_id})
