"""ComfyUI's execution semantics on the executor: lazy inputs, node expansion, ExecutionBlocker,
async nodes in flight together, hidden inputs, out-of-memory handling."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from comfyserve.engine import interrupt
from comfyserve.engine.blocker import ExecutionBlocker
from comfyserve.engine.cache import OutputCache
from comfyserve.engine.execute import OOM_TIPS, Executor, PromptJob
from comfyserve.engine.registry import NodeRegistry
from tests.unit.test_execute import Sink

RAN: list[str] = []


class Value:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {})}, "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value, unique_id):
        RAN.append(unique_id)
        return (value,)


class LazySwitch:
    """Needs only the branch its `choose` input picks; the other is never evaluated."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"choose": ("BOOLEAN", {}), "on_true": ("INT", {"lazy": True}),
                             "on_false": ("INT", {"lazy": True})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    checks: list[dict] = []

    def check_lazy_status(self, choose, on_true=None, on_false=None):
        LazySwitch.checks.append({"choose": choose, "on_true": on_true, "on_false": on_false})
        return ["on_true"] if choose else ["on_false"]

    def run(self, choose, on_true=None, on_false=None):
        return (on_true if choose else on_false,)


class Show:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*", {})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    def run(self, value):
        return {"ui": {"values": [value]}}


class Double:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        return (value * 2,)


class DoubleTimes:
    """Expands into `times` Double nodes chained after its input (an unrolled loop)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {}), "times": ("INT", {})}, "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value, times, unique_id):
        graph = {}
        previous: object = value
        for i in range(times):
            node_id = f"{unique_id}.d{i}"
            graph[node_id] = {"class_type": "Double", "inputs": {"value": previous}}
            previous = [node_id, 0]
        graph[f"{unique_id}.show"] = {"class_type": "Show", "inputs": {"value": previous}}
        return {"result": (previous,), "expand": graph}


class Gate:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {}), "open": ("BOOLEAN", {}), "message": ("STRING", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value, open, message):
        if open:
            return (value,)
        return (ExecutionBlocker(message or None),)


EVENT_BOX: dict[str, asyncio.Event] = {}


class WaitForSignal:
    """Finishes only once SendSignal has run: proof the executor keeps going while it waits."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    async def run(self, value):
        event = EVENT_BOX.setdefault("signal", asyncio.Event())
        await asyncio.wait_for(event.wait(), timeout=10)
        return (value + 100,)


class SendSignal:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    async def run(self, value):
        EVENT_BOX.setdefault("signal", asyncio.Event()).set()
        return (value,)


class Hidden:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "hidden": {"prompt": "PROMPT", "dynprompt": "DYNPROMPT",
                                           "extra": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    def run(self, prompt, dynprompt, extra, unique_id):
        return {"ui": {"seen": [sorted(prompt), unique_id in dynprompt, extra, unique_id]}}


class OutOfMemory:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


NODES = {cls.__name__: cls for cls in (Value, LazySwitch, Show, Double, DoubleTimes, Gate, WaitForSignal,
                                        SendSignal, Hidden, OutOfMemory)}


@pytest.fixture(autouse=True)
def fresh():
    RAN.clear()
    LazySwitch.checks.clear()
    EVENT_BOX.clear()
    interrupt.use_flag(threading.Event())


def executor(**kw) -> Executor:
    registry = NodeRegistry()
    registry.register_mappings(NODES)
    return Executor(registry=registry, cache=OutputCache(), **kw)


def run(ex: Executor, prompt: dict, outputs: list[str], extra: dict | None = None):
    sink = Sink()
    return ex.execute(PromptJob("p", prompt, extra or {}, outputs), sink), sink


def executing(sink: Sink) -> list[str]:
    return [d["node"] for e, d in sink.events if e == "executing"]


LAZY = {
    "1": {"class_type": "Value", "inputs": {"value": 1}},
    "2": {"class_type": "Value", "inputs": {"value": 2}},
    "3": {"class_type": "LazySwitch", "inputs": {"choose": True, "on_true": ["1", 0], "on_false": ["2", 0]}},
    "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
}


def test_lazy_inputs_run_only_when_asked_for():
    result, sink = run(executor(), LAZY, ["4"])
    assert result.status_str == "success"
    assert result.outputs["4"] == {"values": [1]}
    assert RAN == ["1"]  # the branch not chosen never ran
    # First check: both lazy inputs unevaluated (None); second: the asked-for one has its value.
    assert LazySwitch.checks == [{"choose": True, "on_true": None, "on_false": None},
                                 {"choose": True, "on_true": 1, "on_false": None}]
    # The switch is staged twice, as in ComfyUI: once to ask, once to run.
    assert executing(sink) == ["3", "1", "3", "4"]


def test_lazy_branch_chosen_by_a_changed_input_runs_on_the_next_prompt():
    ex = executor()
    run(ex, LAZY, ["4"])
    other = {**LAZY, "3": {**LAZY["3"], "inputs": {**LAZY["3"]["inputs"], "choose": False}}}
    result, _ = run(ex, other, ["4"])
    assert result.outputs["4"] == {"values": [2]} and RAN == ["1", "2"]


def test_expansion_runs_the_graph_and_feeds_its_result_downstream():
    prompt = {
        "1": {"class_type": "Value", "inputs": {"value": 3}},
        "2": {"class_type": "DoubleTimes", "inputs": {"value": ["1", 0], "times": 3}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    result, sink = run(executor(), prompt, ["3"])
    assert result.status_str == "success", result.final_event
    assert result.outputs["3"] == {"values": [24]}
    # The graph's own output node ran and reported under its id, with ComfyUI's meta for it.
    assert result.outputs["2.show"] == {"values": [24]}
    assert result.meta["2.show"] == {"node_id": "2.show", "display_node": "2", "parent_node": "2", "real_node_id": "2"}
    ran = executing(sink)
    assert ran.index("2.d0") < ran.index("2.d1") < ran.index("2.d2") < ran.index("3")
    shown = next(d for e, d in sink.events if e == "executing" and d["node"] == "2.d1")
    assert shown["display_node"] == "2"


def test_expansion_is_cached_on_the_next_identical_prompt():
    prompt = {
        "1": {"class_type": "Value", "inputs": {"value": 3}},
        "2": {"class_type": "DoubleTimes", "inputs": {"value": ["1", 0], "times": 2}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    ex = executor()
    run(ex, prompt, ["3"])
    result, sink = run(ex, prompt, ["3"])
    assert executing(sink) == [] and result.outputs["3"] == {"values": [12]}


def test_silent_blocker_skips_downstream_without_error():
    prompt = {
        "1": {"class_type": "Value", "inputs": {"value": 5}},
        "2": {"class_type": "Gate", "inputs": {"value": ["1", 0], "open": False, "message": ""}},
        "3": {"class_type": "Double", "inputs": {"value": ["2", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
    }
    result, sink = run(executor(), prompt, ["4"])
    assert result.status_str == "success"
    assert "4" not in result.outputs  # the blocked output node produced no UI
    assert not any(e == "execution_error" for e, _ in sink.events)


def test_blocker_with_message_reports_it_at_the_node_it_reaches():
    prompt = {
        "1": {"class_type": "Value", "inputs": {"value": 5}},
        "2": {"class_type": "Gate", "inputs": {"value": ["1", 0], "open": False, "message": "no entry"}},
        "3": {"class_type": "Double", "inputs": {"value": ["2", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
    }
    result, sink = run(executor(), prompt, ["4"])
    errors = [d for e, d in sink.events if e == "execution_error"]
    assert [(d["node_id"], d["exception_message"], d["exception_type"]) for d in errors] == [
        ("3", "Execution Blocked: no entry", "ExecutionBlocked")]
    # As in ComfyUI the prompt still completes; the error is not part of its history messages.
    assert result.status_str == "success" and "4" not in result.outputs
    assert [m[0] for m in result.messages][-1] == "execution_success"


def test_async_nodes_are_in_flight_together():
    prompt = {
        "1": {"class_type": "Value", "inputs": {"value": 1}},
        "2": {"class_type": "WaitForSignal", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "SendSignal", "inputs": {"value": ["1", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
        "5": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
    }
    result, sink = run(executor(), prompt, ["4", "5"])
    assert result.status_str == "success", result.final_event
    assert result.outputs["4"] == {"values": [101]} and result.outputs["5"] == {"values": [1]}
    order = executing(sink)
    # The waiter started before the signaller and finished after it: both were running at once.
    assert order.index("2") < order.index("3")


def test_hidden_inputs():
    prompt = {"7": {"class_type": "Hidden", "inputs": {}}}
    result, _ = run(executor(), prompt, ["7"], extra={"extra_pnginfo": {"workflow": {"a": 1}}})
    assert result.outputs["7"] == {"seen": [["7"], True, {"workflow": {"a": 1}}, "7"]}


def test_out_of_memory_frees_models_and_says_so():
    freed = []
    ex = executor(free_memory=lambda: freed.append(True))
    prompt = {
        "1": {"class_type": "Value", "inputs": {"value": 1}},
        "2": {"class_type": "OutOfMemory", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    result, _ = run(ex, prompt, ["3"])
    event, data = result.final_event
    assert event == "execution_error" and data["exception_type"] == "torch.OutOfMemoryError"
    assert data["exception_message"].endswith(OOM_TIPS)
    assert freed == [True]
    # The next prompt runs normally.
    ok, _ = run(ex, LAZY, ["4"])
    assert ok.status_str == "success"


def test_a_cycle_made_by_expansion_is_an_error_not_a_hang():
    class Loop:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": ("INT", {})}}

        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        def run(self, value):
            graph = {"a": {"class_type": "Double", "inputs": {"value": ["b", 0]}},
                     "b": {"class_type": "Double", "inputs": {"value": ["a", 0]}}}
            return {"result": (["a", 0],), "expand": graph}

    ex = executor()
    ex.registry.register_mappings({"Loop": Loop})
    prompt = {
        "1": {"class_type": "Value", "inputs": {"value": 1}},
        "2": {"class_type": "Loop", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    result, _ = run(ex, prompt, ["3"])
    event, data = result.final_event
    assert event == "execution_error" and data["exception_type"] == "graph.DependencyCycleError"
    assert "a" in data["exception_message"] and "b" in data["exception_message"]


class Changing:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {})}, "hidden": {"prompt": "PROMPT"}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def IS_CHANGED(cls, value):
        return f"hash-of-{value}"

    def run(self, value, prompt):
        return {"ui": {"prompt": [prompt]}}


def test_nodes_see_the_prompt_with_is_changed_answers_and_the_job_keeps_its_own():
    ex = executor()
    ex.registry.register_mappings({"Changing": Changing})
    prompt = {"5": {"class_type": "Changing", "inputs": {"value": 3}, "_meta": {"title": "x"}}}
    result, _ = run(ex, prompt, ["5"])
    (seen,) = result.outputs["5"]["prompt"]
    assert seen == {"5": {"class_type": "Changing", "inputs": {"value": 3}, "_meta": {"title": "x"},
                          "is_changed": ["hash-of-3"]}}
    assert list(seen["5"]) == ["class_type", "inputs", "_meta", "is_changed"]  # appended, as ComfyUI does
    assert "is_changed" not in prompt["5"]
