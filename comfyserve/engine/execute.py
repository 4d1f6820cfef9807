"""Run one validated prompt with ComfyUI's semantics.

What runs: the requested outputs and what they need, cached nodes excepted, in ComfyUI's order.
How a node runs: inputs gathered (lists mapped, hidden inputs filled), `check_lazy_status`
asked which lazy inputs it needs (those are then scheduled and the node waits), the function
called once per list item, `ExecutionBlocker` inputs short-circuiting the call, async functions
run as tasks so several can be in flight, and `{"expand": graph}` results grafted into the prompt
(the node completes once the graph's outputs exist).

The executor runs on the worker thread, on an event loop of its own. It reports through an
`EventSink` and returns an `ExecutionResult`; the worker writes history before the terminal
event goes out.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from comfyserve.engine import interrupt, previews, progress
from comfyserve.engine.blocker import ExecutionBlocker
from comfyserve.engine.cache import CachedNode, OutputCache, Signatures, compute_signatures
from comfyserve.engine.dynprompt import DynamicPrompt
from comfyserve.engine.graph import ExecutionOrder, is_link
from comfyserve.engine.registry import NodeRegistry, input_types

log = logging.getLogger(__name__)

OOM_TIPS = (
    "This error means you ran out of memory on your GPU.\n\n"
    "TIPS: If the workflow worked before you might have accidentally set the batch_size to a large number."
)


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


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's (CUDA or other device) out-of-memory error, without importing torch here."""
    torch = sys.modules.get("torch")
    kinds = tuple(k for k in (getattr(torch, "OutOfMemoryError", None),
                              getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)) if k)
    return bool(kinds) and isinstance(exc, kinds)


def _format_value(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    return str(value)


@dataclass
class _Run:
    """Everything one prompt's execution tracks."""

    job: PromptJob
    sink: EventSink
    dyn: DynamicPrompt
    signatures: Signatures
    order: ExecutionOrder
    state: progress.ProgressState
    results: dict[str, CachedNode] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    outputs_ui: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    # Node id → what its call returned, while async tasks in it are still running.
    pending_async: dict[str, list[Any]] = field(default_factory=dict)
    # Node id → (expanded graph or None, result) per call, until the graph's outputs exist.
    pending_expansion: dict[str, list[tuple[dict | None, Any]]] = field(default_factory=dict)
    tasks: set[asyncio.Task] = field(default_factory=set)
    unblocked: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def prompt_id(self) -> str:
        return self.job.prompt_id


@dataclass
class Executor:
    """Executes prompts one at a time, keeping the output cache and node objects between them."""

    registry: NodeRegistry
    cache: OutputCache = field(default_factory=OutputCache)
    # Called after a torch out-of-memory error (the worker unloads models there).
    free_memory: Callable[[], None] | None = None
    _objects: dict[tuple[str, str], Any] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None

    def execute(self, job: PromptJob, sink: EventSink) -> ExecutionResult:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(self._execute(job, sink))

    async def _execute(self, job: PromptJob, sink: EventSink) -> ExecutionResult:
        prompt_id = job.prompt_id
        messages: list[list[Any]] = []

        def record(event: str, data: dict[str, Any]) -> None:
            messages.append([event, data])
            sink.send(event, data)

        record("execution_start", {"prompt_id": prompt_id, "timestamp": timestamp_ms()})
        previews.set_prompt_method(job.extra_data.get("preview_method"))
        dyn = DynamicPrompt(job.prompt)
        signatures = compute_signatures(dyn, self.registry)
        # Nodes see the prompt with each IS_CHANGED answer added, as ComfyUI records it (SaveImage
        # writes that prompt into the PNG); the queued prompt and its history entry stay as sent.
        dyn.original = with_is_changed(job.prompt, signatures.is_changed)
        results: dict[str, CachedNode] = {}
        for node_id in job.prompt:
            hit = self.cache.get(signatures[node_id])
            if hit is not None:
                results[node_id] = hit
        record("execution_cached", {"nodes": list(results), "prompt_id": prompt_id, "timestamp": timestamp_ms()})

        order = ExecutionOrder(dyn, lambda n: n in results, self._is_output(dyn), self._is_lazy(dyn))
        run = _Run(job, sink, dyn, signatures, order, progress.ProgressState(prompt_id, sink.progress_state), results)
        for node_id in job.outputs_to_execute:
            order.add_output(node_id)
        current: str | None = None
        try:
            while not order.is_empty():
                node_id = order.next_node()
                if node_id is None:
                    if order.external_blocks:
                        await run.unblocked.wait()
                        run.unblocked.clear()
                        continue
                    raise NodeFailure(self._cycle_payload(run, order.cycle_members()))
                current = node_id
                interrupt.throw_if_interrupted()
                if await self._execute_node(run, node_id):
                    run.executed.append(node_id)
                    order.complete(node_id)
        except interrupt.InterruptProcessingException:
            data = {
                "prompt_id": prompt_id,
                "node_id": current,
                "node_type": dyn.get(current, {}).get("class_type") if current else None,
                "executed": list(run.executed),
                "timestamp": timestamp_ms(),
            }
            self.cache.end_prompt(signatures.values())
            messages.append(["execution_interrupted", data])
            return ExecutionResult("error", False, messages, run.outputs_ui, run.meta, ("execution_interrupted", data))
        except NodeFailure as failure:
            self.cache.clear()
            data = failure.payload
            messages.append(["execution_error", data])
            return ExecutionResult("error", False, messages, run.outputs_ui, run.meta, ("execution_error", data))
        finally:
            progress.set_current(None)
            for task in run.tasks:
                task.cancel()
        self.cache.end_prompt(signatures.values())
        data = {"prompt_id": prompt_id, "timestamp": timestamp_ms()}
        messages.append(["execution_success", data])
        return ExecutionResult("success", True, messages, run.outputs_ui, run.meta, ("execution_success", data))

    # -- graph questions -------------------------------------------------------------------
    def _is_output(self, dyn: DynamicPrompt) -> Callable[[str], bool]:
        return lambda node_id: self.registry.is_output_node(dyn[node_id].get("class_type", ""))

    def _is_lazy(self, dyn: DynamicPrompt) -> Callable[[str, str], bool]:
        def lazy(node_id: str, input_name: str) -> bool:
            options = self._input_options(dyn[node_id].get("class_type", ""), input_name)
            return bool(options.get("lazy"))

        return lazy

    def _input_options(self, class_type: str, input_name: str) -> dict[str, Any]:
        cls = self.registry.get(class_type)
        if cls is None:
            return {}
        spec = input_types(cls)
        for section in ("required", "optional"):
            entry = (spec.get(section) or {}).get(input_name)
            if isinstance(entry, (list, tuple)) and len(entry) > 1 and isinstance(entry[1], dict):
                return entry[1]
        return {}

    # -- one node ----------------------------------------------------------------------------
    async def _execute_node(self, run: _Run, node_id: str) -> bool:
        """Run (or resume) one node; True when it is done, False when it waits for something."""
        node = run.dyn[node_id]
        class_type = node["class_type"]
        display_id = run.dyn.display_node_id(node_id)
        if node_id in run.results:
            # A cached output node: ComfyUI re-sends its old UI output.
            self._publish(run, node_id, run.results[node_id])
            run.state.finish(node_id)
            return True
        cls = self.registry.get(class_type)
        inputs: dict[str, list[Any]] = {}
        try:
            if cls is None:
                raise KeyError(f"Node type {class_type!r} is not registered")
            if node_id in run.pending_async:
                returned = [r.result() if isinstance(r, asyncio.Task) else r for r in run.pending_async.pop(node_id)]
                outcome = _collect(cls, returned)
            elif node_id in run.pending_expansion:
                outcome = _Outcome(self._resolve_expansion(run, node_id, cls), None, [])
            else:
                run.state.start(node_id)
                inputs, missing = self._gather_inputs(run, node_id, cls)
                run.sink.send("executing", {"node": node_id, "display_node": display_id, "prompt_id": run.prompt_id})
                obj = self._objects.get((node_id, class_type))
                if obj is None:
                    obj = self._objects[(node_id, class_type)] = cls()
                progress.set_current(progress.ProgressReporter(
                    run.prompt_id, node_id, run.state, run.sink.send, run.sink.preview))
                if hasattr(obj, "check_lazy_status"):
                    wanted = await self._lazy_inputs_needed(run, node_id, cls, obj, inputs, missing)
                    if wanted:
                        for name in wanted:
                            run.order.make_input_strong_link(node_id, name)
                        return False
                returned = await self._call_over_list(run, node_id, cls, obj, cls.FUNCTION, inputs, blocks=True)
                if any(isinstance(r, asyncio.Task) and not r.done() for r in returned):
                    self._wait_for_tasks(run, node_id, returned)
                    return False
                returned = [r.result() if isinstance(r, asyncio.Task) else r for r in returned]
                outcome = _collect(cls, returned)
            if outcome.expansions:
                self._expand(run, node_id, outcome)
                return False
        except interrupt.InterruptProcessingException:
            raise
        except Exception as exc:
            raise NodeFailure(self._failure_payload(run, node_id, class_type, inputs, exc)) from exc
        finally:
            progress.set_current(None)
        entry = CachedNode(outcome.outputs, outcome.ui)
        run.results[node_id] = entry
        self.cache.put(run.signatures[node_id], entry)
        self._publish(run, node_id, entry)
        run.state.finish(node_id)
        return True

    def _publish(self, run: _Run, node_id: str, entry: CachedNode) -> None:
        if not entry.ui:
            return
        run.outputs_ui[node_id] = entry.ui
        display_id = run.dyn.display_node_id(node_id)
        run.meta[node_id] = {
            "node_id": node_id,
            "display_node": display_id,
            "parent_node": run.dyn.parent_of(node_id),
            "real_node_id": run.dyn.real_node_id(node_id),
        }
        run.sink.send("executed", {"node": node_id, "display_node": display_id, "output": entry.ui,
                                   "prompt_id": run.prompt_id})

    def _gather_inputs(self, run: _Run, node_id: str, cls: type) -> tuple[dict[str, list[Any]], set[str]]:
        """Each input as a list of values (one per list item); links whose source has not run
        (lazy inputs not asked for) are None and named in the returned set."""
        spec = input_types(cls)
        declared: dict[str, Any] = {}
        for section in ("required", "optional"):
            declared.update(spec.get(section, {}) or {})
        gathered: dict[str, list[Any]] = {}
        missing: set[str] = set()
        for name, value in run.dyn[node_id].get("inputs", {}).items():
            options = _options(declared.get(name))
            if is_link(value) and not options.get("rawLink"):
                source = run.results.get(str(value[0]))
                if source is None or value[1] >= len(source.outputs):
                    gathered[name] = [None]
                    missing.add(name)
                    continue
                gathered[name] = source.outputs[value[1]]
            elif name in declared:
                gathered[name] = [value]
        for name, kind in (spec.get("hidden", {}) or {}).items():
            hidden = self._hidden_value(run, node_id, kind)
            if hidden is not _NOT_HIDDEN:
                gathered[name] = [hidden]
        return gathered, missing

    @staticmethod
    def _hidden_value(run: _Run, node_id: str, kind: Any) -> Any:
        extra = run.job.extra_data
        return {
            "PROMPT": run.dyn.original,
            "DYNPROMPT": run.dyn,
            "EXTRA_PNGINFO": extra.get("extra_pnginfo"),
            "UNIQUE_ID": node_id,
            "AUTH_TOKEN_COMFY_ORG": extra.get("auth_token_comfy_org"),
            "API_KEY_COMFY_ORG": extra.get("api_key_comfy_org"),
        }.get(kind, _NOT_HIDDEN) if isinstance(kind, str) else _NOT_HIDDEN

    async def _lazy_inputs_needed(
        self, run: _Run, node_id: str, cls: type, obj: Any, inputs: dict[str, list[Any]], missing: set[str]
    ) -> list[str]:
        returned = await self._call_over_list(run, node_id, cls, obj, "check_lazy_status", inputs, blocks=False)
        returned = [await r if isinstance(r, asyncio.Task) else r for r in returned]
        names: list[str] = []
        for answer in returned:
            if isinstance(answer, (list, tuple)):
                for name in answer:
                    if isinstance(name, str) and (name not in inputs or name in missing) and name not in names:
                        names.append(name)
        # Only inputs that are links can be scheduled; asking for anything else changes nothing.
        node_inputs = run.dyn[node_id].get("inputs", {})
        return [n for n in names if is_link(node_inputs.get(n))]

    async def _call_over_list(
        self, run: _Run, node_id: str, cls: type, obj: Any, function_name: str,
        inputs: dict[str, list[Any]], blocks: bool,
    ) -> list[Any]:
        """Call `function_name` once per list item (shorter lists repeat their last item), or once
        with the whole lists for INPUT_IS_LIST nodes. An ExecutionBlocker input replaces the call."""
        function = getattr(obj, function_name)
        if getattr(cls, "INPUT_IS_LIST", False):
            calls = [inputs]
        elif not inputs:
            calls = [{}]
        else:
            longest = max(len(v) for v in inputs.values())
            calls = [{k: v[i] if i < len(v) else v[-1] for k, v in inputs.items() if v} for i in range(longest)]
        returned: list[Any] = []
        for index, kwargs in enumerate(calls):
            interrupt.throw_if_interrupted()
            blocker = _blocker_in(kwargs, list_inputs=getattr(cls, "INPUT_IS_LIST", False)) if blocks else None
            if blocker is not None:
                returned.append(self._blocked(run, node_id, blocker))
                continue
            _set_graph_prefix(node_id, index)
            value = function(**kwargs)
            if inspect.isawaitable(value):
                task = asyncio.ensure_future(value)
                run.tasks.add(task)
                task.add_done_callback(run.tasks.discard)
                await asyncio.sleep(0)
                value = task
            returned.append(value)
        return returned

    def _blocked(self, run: _Run, node_id: str, blocker: ExecutionBlocker) -> ExecutionBlocker:
        """A blocker with a message fails the node it reaches (ComfyUI sends the error and goes on);
        downstream of that, the block is silent."""
        if blocker.message is None:
            return blocker
        run.sink.send("execution_error", {
            "prompt_id": run.prompt_id,
            "node_id": node_id,
            "node_type": run.dyn[node_id].get("class_type"),
            "executed": list(run.executed),
            "exception_message": f"Execution Blocked: {blocker.message}",
            "exception_type": "ExecutionBlocked",
            "traceback": [],
            "current_inputs": [],
            "current_outputs": [],
        })
        return ExecutionBlocker(None)

    def _wait_for_tasks(self, run: _Run, node_id: str, returned: list[Any]) -> None:
        run.pending_async[node_id] = returned
        unblock = run.order.add_external_block(node_id)
        tasks = [r for r in returned if isinstance(r, asyncio.Task)]

        async def when_done() -> None:
            try:
                await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                unblock()
                run.unblocked.set()

        waiter = asyncio.ensure_future(when_done())
        run.tasks.add(waiter)
        waiter.add_done_callback(run.tasks.discard)

    # -- expansion -------------------------------------------------------------------------
    def _expand(self, run: _Run, node_id: str, outcome: _Outcome) -> None:
        """Graft each returned graph into the prompt; the node waits for the links it returned."""
        new_outputs: list[str] = []
        links: list[tuple[str, int]] = []
        for graph, result in outcome.expansions:
            if graph is None:
                continue
            for new_id, new_node in graph.items():
                display = new_node.get("override_display_id", node_id)
                run.dyn.add_ephemeral_node(str(new_id), new_node, node_id, display)
            for new_id, new_node in graph.items():
                new_id = str(new_id)
                hit = self.cache.get(run.signatures[new_id])
                if hit is not None:
                    run.results[new_id] = hit
                if self.registry.is_output_node(new_node.get("class_type", "")):
                    new_outputs.append(new_id)
            for value in result or ():
                if is_link(value):
                    links.append((str(value[0]), value[1]))
        for output_id in new_outputs:
            run.order.add_node(output_id)
        for source, _socket in links:
            if source not in run.dyn:
                raise KeyError(f"Node {node_id} expanded into a graph whose result links to unknown node {source!r}")
            run.order.add_strong_link(source, node_id)
        run.pending_expansion[node_id] = outcome.expansions

    def _resolve_expansion(self, run: _Run, node_id: str, cls: type) -> list[list[Any]]:
        """The expanding node's outputs, read from the finished nodes its results link to."""
        resolved: list[tuple[Any, ...]] = []
        for graph, result in run.pending_expansion.pop(node_id):
            if graph is None:
                resolved.append(tuple(result or ()))
                continue
            values: list[Any] = []
            for value in result or ():
                if is_link(value):
                    values.extend(run.results[str(value[0])].outputs[value[1]])
                else:
                    values.append(value)
            resolved.append(tuple(values))
        return _merge_results(resolved, cls)

    # -- errors ------------------------------------------------------------------------------
    def _failure_payload(
        self, run: _Run, node_id: str, class_type: str, inputs: dict[str, list[Any]], exc: Exception
    ) -> dict[str, Any]:
        log.error("!!! Exception during processing !!! node %s (%s): %s", node_id, class_type, exc, exc_info=exc)
        tips = ""
        if is_out_of_memory(exc):
            tips = OOM_TIPS
            log.error("Got an OOM, unloading all loaded models.")
            self.cache.clear()
            if self.free_memory is not None:
                try:
                    self.free_memory()
                except Exception:
                    log.exception("freeing memory after the out-of-memory error failed")
        return {
            "prompt_id": run.prompt_id,
            "node_id": run.dyn.real_node_id(node_id),
            "node_type": class_type,
            "executed": list(run.executed),
            "exception_message": f"{exc}\n{tips}",
            "exception_type": exception_type_name(exc),
            "traceback": traceback.format_tb(exc.__traceback__),
            "current_inputs": {k: [_format_value(x) for x in v] for k, v in inputs.items()},
            "current_outputs": list(run.job.prompt),
            "timestamp": timestamp_ms(),
        }

    @staticmethod
    def _cycle_payload(run: _Run, stuck: list[str]) -> dict[str, Any]:
        first = stuck[0] if stuck else None
        return {
            "prompt_id": run.prompt_id,
            "node_id": first,
            "node_type": run.dyn.get(first, {}).get("class_type") if first else None,
            "executed": list(run.executed),
            "exception_message": f"Dependency cycle detected: nodes {', '.join(stuck)} depend on each other; none can run.",
            "exception_type": "graph.DependencyCycleError",
            "traceback": [],
            "current_inputs": {},
            "current_outputs": list(run.job.prompt),
            "timestamp": timestamp_ms(),
        }


_NOT_HIDDEN = object()


def with_is_changed(prompt: dict[str, dict[str, Any]], answers: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A copy of `prompt` whose nodes with an IS_CHANGED carry `"is_changed": [answer]`."""
    if not answers:
        return prompt
    out = {}
    for node_id, node in prompt.items():
        if node_id in answers:
            answer = answers[node_id]
            node = {**node, "is_changed": answer if isinstance(answer, float) and answer != answer else [answer]}
        out[node_id] = node
    return out


def _options(spec: Any) -> dict[str, Any]:
    if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict):
        return spec[1]
    return {}


def _blocker_in(kwargs: dict[str, Any], list_inputs: bool) -> ExecutionBlocker | None:
    for value in kwargs.values():
        if list_inputs and isinstance(value, list):
            for item in value:
                if isinstance(item, ExecutionBlocker):
                    return item
        if isinstance(value, ExecutionBlocker):
            return value
    return None


def _set_graph_prefix(node_id: str, call_index: int) -> None:
    """Expansion graphs built during this call get ids under this node (GraphBuilder's default)."""
    builder = sys.modules.get("comfyserve.engine.graph_builder")
    setter = getattr(getattr(builder, "GraphBuilder", None), "set_default_prefix", None)
    if setter is not None:
        setter(node_id, call_index)


@dataclass
class _Outcome:
    """What a node's calls produced: outputs per socket, merged UI, and any expansions."""

    outputs: list[list[Any]]
    ui: dict[str, Any] | None
    expansions: list[tuple[dict | None, Any]]


def _collect(cls: type, returned: list[Any]) -> _Outcome:
    """Turn each call's return value (tuple, dict with result/ui/expand, or blocker) into outputs."""
    n_outputs = len(getattr(cls, "RETURN_TYPES", ()))
    results: list[Any] = []
    uis: list[dict[str, Any]] = []
    per_call: list[tuple[dict | None, Any]] = []
    expanded = False
    for value in returned:
        if isinstance(value, dict):
            if value.get("ui") is not None:
                uis.append(value["ui"])
            if "expand" in value:
                expanded = True
                result = value.get("result")
                if isinstance(result, ExecutionBlocker):
                    result = (result,) * n_outputs
                per_call.append((value["expand"], result))
            elif "result" in value:
                result = value.get("result")
                if isinstance(result, ExecutionBlocker):
                    result = (result,) * n_outputs
                results.append(result)
                per_call.append((None, result))
        else:
            if isinstance(value, ExecutionBlocker):
                value = (value,) * n_outputs
            results.append(value)
            per_call.append((None, value))
    ui = None
    if uis:
        ui = {key: [item for part in uis for item in (part.get(key) or [])] for key in uis[0]}
    if expanded:
        return _Outcome([], ui, per_call)
    return _Outcome(_merge_results(results, cls), ui, [])


def _merge_results(results: list[Any], cls: type) -> list[list[Any]]:
    """One list of values per output socket; OUTPUT_IS_LIST sockets are concatenated."""
    results = [tuple(r) if r is not None else () for r in results]
    n_outputs = len(results[0]) if results else len(getattr(cls, "RETURN_TYPES", ()))
    if not results:
        return [[] for _ in range(n_outputs)]
    is_list = list(getattr(cls, "OUTPUT_IS_LIST", [False] * n_outputs))
    outputs: list[list[Any]] = []
    for i in range(n_outputs):
        if i < len(is_list) and is_list[i]:
            value: list[Any] = []
            for r in results:
                if i >= len(r):
                    continue
                if isinstance(r[i], ExecutionBlocker):
                    value.append(r[i])
                else:
                    value.extend(r[i])
            outputs.append(value)
        else:
            outputs.append([r[i] for r in results if i < len(r)])
    return outputs
