"""Run one validated prompt: order, cache, list mapping, events, errors, interrupt.

The executor runs on the worker thread. It reports through an `EventSink` and returns an
`ExecutionResult`; the worker writes history before the terminal event goes out.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Protocol

from comfyserve.engine import interrupt, progress
from comfyserve.engine.cache import CachedNode, OutputCache, compute_signatures
from comfyserve.engine.graph import ExecutionOrder, is_link
from comfyserve.engine.registry import NodeRegistry, input_types

log = logging.getLogger(__name__)


class EventSink(Protocol):
    """Where execution events go (the worker decides addressing)."""

    def send(self, event: str, data: dict[str, Any]) -> None: ...

    def progress_state(self, event: str, data: dict[str, Any]) -> None: ...

    def preview(self, node_id: str, preview: progress.Preview, before_progress: bool) -> None: ...


@dataclass
class ExecutionResult:
    """Outcome of one prompt, ready to become a history entry."""

    status_str: str
    completed: bool
    messages: list[list[Any]]
    outputs: dict[str, Any]
    meta: dict[str, Any]
    final_event: tuple[str, dict[str, Any]]


@dataclass
class PromptJob:
    """What the executor needs to know about one queued prompt."""

    prompt_id: str
    prompt: dict[str, dict[str, Any]]
    extra_data: dict[str, Any]
    outputs_to_execute: list[str]


class NodeFailure(Exception):
    """A node raised; carries the error payload for `execution_error`."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(payload.get("exception_message", ""))
        self.payload = payload


def timestamp_ms() -> int:
    return int(time.time() * 1000)


def exception_type_name(exc: BaseException) -> str:
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _format_value(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    return str(value)


@dataclass
class Executor:
    """Executes prompts one at a time, keeping the output cache and node objects between them."""

    registry: NodeRegistry
    cache: OutputCache = field(default_factory=OutputCache)
    _objects: dict[tuple[str, str], Any] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None

    def execute(self, job: PromptJob, sink: EventSink) -> ExecutionResult:
        prompt_id, prompt = job.prompt_id, job.prompt
        messages: list[list[Any]] = []
        outputs_ui: dict[str, Any] = {}
        meta: dict[str, Any] = {}

        def record(event: str, data: dict[str, Any]) -> None:
            messages.append([event, data])
            sink.send(event, data)

        record("execution_start", {"prompt_id": prompt_id, "timestamp": timestamp_ms()})
        signatures = compute_signatures(prompt, self.registry)
        results: dict[str, CachedNode] = {}
        for node_id in prompt:
            hit = self.cache.get(signatures[node_id])
            if hit is not None:
                results[node_id] = hit
        cached_ids = list(results)
        record("execution_cached", {"nodes": cached_ids, "prompt_id": prompt_id, "timestamp": timestamp_ms()})

        state = progress.ProgressState(prompt_id, sink.progress_state)
        order = ExecutionOrder(prompt, lambda n: n in results, self.registry.is_output_node_of(prompt))
        for node_id in job.outputs_to_execute:
            order.add_output(node_id)
        executed: list[str] = []
        current: str | None = None
        try:
            while not order.is_empty():
                node_id = current = order.next_node()
                if node_id is None:
                    raise NodeFailure(self._cycle_payload(prompt_id, list(order.pending), executed, prompt))
                interrupt.throw_if_interrupted()
                if node_id in results:
                    entry = results[node_id]
                    if entry.ui:
                        sink.send("executed", self._executed_data(prompt_id, node_id, entry.ui))
                        outputs_ui[node_id] = entry.ui
                        meta[node_id] = _meta(node_id)
                    state.finish(node_id)
                else:
                    state.start(node_id)
                    sink.send("executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id})
                    entry = self._run_node(job, node_id, results, sink, state, executed)
                    results[node_id] = entry
                    self.cache.put(signatures[node_id], entry)
                    if entry.ui:
                        outputs_ui[node_id] = entry.ui
                        meta[node_id] = _meta(node_id)
                        sink.send("executed", self._executed_data(prompt_id, node_id, entry.ui))
                    state.finish(node_id)
                executed.append(node_id)
                order.complete(node_id)
        except interrupt.InterruptProcessingException:
            data = {
                "prompt_id": prompt_id,
                "node_id": current,
                "node_type": prompt.get(current, {}).get("class_type") if current else None,
                "executed": list(executed),
                "timestamp": timestamp_ms(),
            }
            self._finish_prompt(signatures, ok=True)
            messages.append(["execution_interrupted", data])
            return ExecutionResult("error", False, messages, outputs_ui, meta, ("execution_interrupted", data))
        except NodeFailure as failure:
            self.cache.clear()
            data = failure.payload
            messages.append(["execution_error", data])
            return ExecutionResult("error", False, messages, outputs_ui, meta, ("execution_error", data))
        finally:
            progress.set_current(None)
        self._finish_prompt(signatures, ok=True)
        data = {"prompt_id": prompt_id, "timestamp": timestamp_ms()}
        messages.append(["execution_success", data])
        return ExecutionResult("success", True, messages, outputs_ui, meta, ("execution_success", data))

    # -- one node ----------------------------------------------------------------------------
    def _run_node(
        self,
        job: PromptJob,
        node_id: str,
        results: dict[str, CachedNode],
        sink: EventSink,
        state: progress.ProgressState,
        executed: list[str],
    ) -> CachedNode:
        node = job.prompt[node_id]
        class_type = node["class_type"]
        cls = self.registry.get(class_type)
        inputs: dict[str, list[Any]] = {}
        try:
            if cls is None:
                raise KeyError(f"Node type {class_type!r} is not registered")
            inputs = self._gather_inputs(job, node_id, cls, results)
            obj = self._objects.get((node_id, class_type))
            if obj is None:
                obj = self._objects[(node_id, class_type)] = cls()
            progress.set_current(progress.ProgressReporter(job.prompt_id, node_id, state, sink.send, sink.preview))
            return self._map_over_list(cls, obj, inputs)
        except interrupt.InterruptProcessingException:
            raise
        except Exception as exc:
            log.error("node %s (%s) failed: %s", node_id, class_type, exc, exc_info=True)
            raise NodeFailure(
                {
                    "prompt_id": job.prompt_id,
                    "node_id": node_id,
                    "node_type": class_type,
                    "executed": list(executed),
                    "exception_message": str(exc),
                    "exception_type": exception_type_name(exc),
                    "traceback": traceback.format_tb(exc.__traceback__),
                    "current_inputs": {k: [_format_value(x) for x in v] for k, v in inputs.items()},
                    "current_outputs": list(job.prompt),
                    "timestamp": timestamp_ms(),
                }
            ) from exc
        finally:
            progress.set_current(None)

    def _gather_inputs(
        self, job: PromptJob, node_id: str, cls: type, results: dict[str, CachedNode]
    ) -> dict[str, list[Any]]:
        spec = input_types(cls)
        declared: dict[str, Any] = {}
        for section in ("required", "optional"):
            declared.update(spec.get(section, {}) or {})
        gathered: dict[str, list[Any]] = {}
        for name, value in job.prompt[node_id].get("inputs", {}).items():
            if is_link(value):
                source = results.get(str(value[0]))
                if source is None:
                    continue
                gathered[name] = source.outputs[value[1]]
            elif name in declared:
                gathered[name] = [value]
        for name, kind in (spec.get("hidden", {}) or {}).items():
            if kind == "PROMPT":
                gathered[name] = [job.prompt]
            elif kind == "EXTRA_PNGINFO":
                gathered[name] = [job.extra_data.get("extra_pnginfo")]
            elif kind == "UNIQUE_ID":
                gathered[name] = [node_id]
            elif kind == "AUTH_TOKEN_COMFY_ORG":
                gathered[name] = [job.extra_data.get("auth_token_comfy_org")]
            elif kind == "API_KEY_COMFY_ORG":
                gathered[name] = [job.extra_data.get("api_key_comfy_org")]
        return gathered

    def _map_over_list(self, cls: type, obj: Any, inputs: dict[str, list[Any]]) -> CachedNode:
        """Call the node once per list item (repeating shorter lists' last item), as ComfyUI does."""
        function = getattr(obj, cls.FUNCTION)
        if getattr(cls, "INPUT_IS_LIST", False):
            calls = [inputs]
        elif not inputs:
            calls = [{}]
        else:
            longest = max(len(v) for v in inputs.values())
            calls = [{k: v[i] if i < len(v) else v[-1] for k, v in inputs.items() if v} for i in range(longest)]
        returned = []
        for kwargs in calls:
            interrupt.throw_if_interrupted()
            value = function(**kwargs)
            if inspect.isawaitable(value):
                value = self._run_async(value)
            returned.append(value)
        n_outputs = len(getattr(cls, "RETURN_TYPES", ()))
        is_list = list(getattr(cls, "OUTPUT_IS_LIST", [False] * n_outputs))
        outputs: list[list[Any]] = [[] for _ in range(n_outputs)]
        uis: list[dict[str, Any]] = []
        for value in returned:
            if isinstance(value, dict):
                if value.get("ui") is not None:
                    uis.append(value["ui"])
                result = value.get("result", ())
            else:
                result = value
            if result is None:
                result = ()
            for i in range(min(n_outputs, len(result))):
                if i < len(is_list) and is_list[i]:
                    outputs[i].extend(result[i])
                else:
                    outputs[i].append(result[i])
        ui = None
        if uis:
            ui = {key: [item for part in uis for item in (part.get(key) or [])] for key in uis[0]}
        return CachedNode(outputs, ui)

    def _run_async(self, awaitable: Any) -> Any:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(awaitable)

    # -- bookkeeping ---------------------------------------------------------------------------
    def _finish_prompt(self, signatures: dict[str, Any], ok: bool) -> None:
        self.cache.end_prompt(set(signatures.values()))

    @staticmethod
    def _executed_data(prompt_id: str, node_id: str, ui: dict[str, Any]) -> dict[str, Any]:
        return {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": prompt_id}

    @staticmethod
    def _cycle_payload(prompt_id: str, stuck: list[str], executed: list[str], prompt: dict) -> dict[str, Any]:
        return {
            "prompt_id": prompt_id,
            "node_id": stuck[0] if stuck else None,
            "node_type": prompt.get(stuck[0], {}).get("class_type") if stuck else None,
            "executed": list(executed),
            "exception_message": f"Nodes {', '.join(stuck)} depend on each other in a cycle; none can run.",
            "exception_type": "comfyserve.DependencyCycle",
            "traceback": [],
            "current_inputs": {},
            "current_outputs": list(prompt),
            "timestamp": timestamp_ms(),
        }


def _meta(node_id: str) -> dict[str, Any]:
    return {"node_id": node_id, "display_node": node_id, "parent_node": None, "real_node_id": node_id}
