"""The prompt queue: pending heap, the running prompt, history, and the single worker thread.

Mirrors ComfyUI's PromptQueue semantics (priority `number`, heap order in `GET /queue`,
history in completion order) and persists every change through `Store`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from comfyserve.store import Store

if TYPE_CHECKING:
    from comfyserve.server.context import ServerContext
    from comfyserve.server.hub import WebSocketHub

log = logging.getLogger(__name__)

# Keys of extra_data that are secrets: never shown by /queue, /history or /api/jobs.
SENSITIVE_EXTRA_KEYS = ("api_key_comfy_org", "auth_token_comfy_org")
# A prompt cut off by a crash is started at most this many times in all.
MAX_ATTEMPTS = 2


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class QueueItem:
    """One submitted prompt: ComfyUI's 5-tuple plus bookkeeping."""

    number: float | int
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: list[str]
    seq: int = 0
    attempts: int = 0
    sensitive: dict[str, Any] = field(default_factory=dict)
    execution_start_time: int | None = None

    def as_list(self) -> list[Any]:
        """`[number, prompt_id, prompt, extra_data, outputs_to_execute]`, as clients see it."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs_to_execute]

    @property
    def client_id(self) -> str | None:
        return self.extra_data.get("client_id")

    @property
    def create_time(self) -> int | None:
        return self.extra_data.get("create_time")


@dataclass
class HistoryRecord:
    """A finished prompt: the history entry and its timings (for /api/jobs)."""

    entry: dict[str, Any]
    timing: dict[str, Any]


def _next_number(numbers: list[Any]) -> int:
    """Where ComfyUI's `number` counter carries on after the stored prompts: one past every
    number it gave out. Those are whole (negative for `front`); a client's own `number` may be
    any float and is not counted."""
    counted = [abs(n) for n in numbers if type(n) is int]
    return max(counted) + 1 if counted else 0


class PromptQueue:
    """Pending prompts, the running one, and the finished ones; thread-safe."""

    def __init__(self, store: Store, hub: WebSocketHub, max_history: int = 10000) -> None:
        self.store = store
        self.hub = hub
        self.max_history = max_history
        self._cond = threading.Condition()
        self._heap: list[tuple[float | int, int, QueueItem]] = []
        # The same pending items by prompt id (duplicate checks and /api/jobs/{id} without a scan).
        self._pending: dict[str, QueueItem] = {}
        self.running: dict[str, QueueItem] = {}
        self.history: OrderedDict[str, HistoryRecord] = OrderedDict()
        self._seq = itertools.count(1)
        self._number = 0
        self._worker: threading.Thread | None = None
        self._stopping = False
        self.interrupt_requested = threading.Event()
        # The node the worker is executing now (for clients that reconnect mid-run).
        self.current_node: str | None = None
        # Memory-release requests from POST /free, applied by the worker between prompts.
        self.free_requests: dict[str, bool] = {}
        # Callbacks waiting for a prompt to finish (POST /api/v1/prompts blocks on them).
        self._done_callbacks: dict[str, list[Callable[[HistoryRecord], None]]] = {}
        hub.busy = lambda: bool(self._heap)
        self._restore()

    # -- start-up recovery ---------------------------------------------------------------
    def _restore(self) -> None:
        for prompt_id, entry, timing in self.store.history():
            self.history[prompt_id] = HistoryRecord(entry, timing)
        if len(self.history) > self.max_history:  # started with a smaller --max-history
            excess = len(self.history) - self.max_history
            self.store.drop_oldest_history(excess)
            for _ in range(excess):
                self.history.popitem(last=False)
        seq = 0
        for stored in self.store.queued():
            item = QueueItem(*stored.item[:5], seq=stored.seq, attempts=stored.attempts)
            seq = max(seq, stored.seq)
            if stored.state == "running":
                if stored.attempts >= MAX_ATTEMPTS:
                    log.warning("prompt %s was cut off twice while running; marked failed", item.prompt_id)
                    self._fail_abandoned(item)
                    continue
                log.warning("prompt %s was running when the server stopped; queued again", item.prompt_id)
                self.store.requeue(item.prompt_id)
            heapq.heappush(self._heap, (item.number, item.seq, item))
            self._pending[item.prompt_id] = item
        self._seq = itertools.count(seq + 1)
        numbers = [(record.entry.get("prompt") or [None])[0] for record in self.history.values()]
        numbers += [item.number for item in self._pending.values()]
        self._number = max(self.store.saved_counter(), _next_number(numbers))

    def _fail_abandoned(self, item: QueueItem) -> None:
        ts = now_ms()
        error = {
            "prompt_id": item.prompt_id,
            "node_id": None,
            "node_type": None,
            "executed": [],
            "exception_message": "The server stopped twice while running this prompt; it was not retried again.",
            "exception_type": "comfyserve.ServerRestarted",
            "traceback": [],
            "current_inputs": {},
            "current_outputs": [],
            "timestamp": ts,
        }
        entry = {
            "prompt": item.as_list(),
            "outputs": {},
            "status": {"status_str": "error", "completed": False, "messages": [["execution_error", error]]},
            "meta": {},
        }
        timing = {"create_time": item.create_time, "execution_start_time": None, "execution_end_time": ts}
        self.store.finish(item.prompt_id, entry, timing, self._excess_history(item.prompt_id))
        self.history[item.prompt_id] = HistoryRecord(entry, timing)
        while len(self.history) > self.max_history:
            self.history.popitem(last=False)

    # -- submitting ------------------------------------------------------------------------
    def next_number(self) -> int:
        """ComfyUI's counter: advanced by every POST /prompt with a JSON object body."""
        with self._cond:
            number = self._number
            self._number += 1
            return number

    def put(self, item: QueueItem) -> None:
        item.seq = next(self._seq)
        # Persisted before the worker can see it; the disk write happens outside the lock the
        # worker takes prompts under.
        self.store.add_pending(item.prompt_id, item.seq, item.as_list())
        with self._cond:
            heapq.heappush(self._heap, (item.number, item.seq, item))
            self._pending[item.prompt_id] = item
            self._cond.notify()
        self.send_status()

    def remaining(self) -> int:
        """Pending + running: what ComfyUI reports as `queue_remaining`."""
        return len(self._heap) + len(self.running)

    def status_payload(self, sid: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": self.remaining()}}}
        if sid is not None:
            data["sid"] = sid
        return data

    def send_status(self) -> None:
        self.hub.send("status", self.status_payload())

    # -- reading ---------------------------------------------------------------------------
    def snapshot(self) -> tuple[list[QueueItem], list[QueueItem]]:
        """(running, pending) — pending in internal heap order, as ComfyUI shows it."""
        with self._cond:
            return list(self.running.values()), [entry[2] for entry in self._heap]

    def history_snapshot(self) -> list[tuple[str, HistoryRecord]]:
        """The finished prompts in completion order, copied while the worker cannot change them."""
        with self._cond:
            return list(self.history.items())

    def pending_item(self, prompt_id: str) -> QueueItem | None:
        with self._cond:
            return self._pending.get(prompt_id)

    # -- changing --------------------------------------------------------------------------
    def delete_pending(self, prompt_ids: list[str]) -> None:
        wanted = set(prompt_ids)
        with self._cond:
            kept = [entry for entry in self._heap if entry[2].prompt_id not in wanted]
            if len(kept) == len(self._heap):
                return
            self._heap = kept
            heapq.heapify(self._heap)
            for prompt_id in wanted:
                self._pending.pop(prompt_id, None)
            self.store.remove_pending(list(wanted))
        self.send_status()

    def clear_pending(self) -> None:
        with self._cond:
            self._heap = []
            self._pending.clear()
            self.store.clear_pending()
        self.send_status()

    def delete_history(self, prompt_ids: list[str]) -> None:
        with self._cond:
            for prompt_id in prompt_ids:
                self.history.pop(prompt_id, None)
            self.store.delete_history(prompt_ids)

    def clear_history(self) -> None:
        with self._cond:
            self.history.clear()
            self.store.clear_history()

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        with self._cond:
            if unload_models:
                self.free_requests["unload_models"] = True
            if free_memory:
                self.free_requests["free_memory"] = True

    def take_free_requests(self) -> dict[str, bool]:
        with self._cond:
            requests, self.free_requests = self.free_requests, {}
        return requests

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupt the running prompt (only if it is `prompt_id`, when given)."""
        with self._cond:
            if not self.running:
                return False
            if prompt_id is not None and prompt_id not in self.running:
                return False
        self.interrupt_requested.set()
        return True

    # -- the worker ------------------------------------------------------------------------
    def take(self, timeout: float | None = None) -> QueueItem | None:
        """Block until a prompt is pending, mark it running and return it (None when stopping)."""
        with self._cond:
            while not self._heap:
                if self._stopping or not self._cond.wait(timeout):
                    return None
            _, _, item = heapq.heappop(self._heap)
            self._pending.pop(item.prompt_id, None)
            item.attempts += 1
            item.execution_start_time = now_ms()
            self.running[item.prompt_id] = item
            self.interrupt_requested.clear()
        self.store.mark_running(item.prompt_id, item.execution_start_time)
        return item

    def finish(self, item: QueueItem, entry: dict[str, Any]) -> None:
        """Record the history entry (store first, then memory) and drop the running prompt."""
        timing = {
            "create_time": item.create_time,
            "execution_start_time": item.execution_start_time,
            "execution_end_time": now_ms(),
        }
        with self._cond:
            excess = self._excess_history(item.prompt_id)
        self.store.finish(item.prompt_id, entry, timing, excess)
        with self._cond:
            self.history[item.prompt_id] = HistoryRecord(entry, timing)
            self.history.move_to_end(item.prompt_id)
            while len(self.history) > self.max_history:
                self.history.popitem(last=False)
            self.running.pop(item.prompt_id, None)
            callbacks = self._done_callbacks.pop(item.prompt_id, [])
        for callback in callbacks:
            callback(self.history[item.prompt_id])

    def _excess_history(self, adding: str) -> int:
        """How many of the oldest entries must go so that adding `adding` keeps the bound."""
        size = len(self.history) + (0 if adding in self.history else 1)
        return max(0, size - self.max_history)

    def on_done(self, prompt_id: str, callback: Callable[[HistoryRecord], None]) -> None:
        """Call `callback(record)` (on the worker thread) once `prompt_id` is in the history."""
        with self._cond:
            record = self.history.get(prompt_id)
            if record is None:
                self._done_callbacks.setdefault(prompt_id, []).append(callback)
                return
        callback(record)

    def start_worker(self, ctx: ServerContext) -> None:
        from comfyserve.worker import run_worker

        self._stopping = False
        self._worker = threading.Thread(target=run_worker, args=(self, ctx), name="comfyserve-worker", daemon=True)
        self._worker.start()

    def stop_worker(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self.interrupt_requested.set()
        if self._worker is not None:
            self._worker.join(timeout=10)

    @property
    def stopping(self) -> bool:
        return self._stopping
