"""The executor on small node classes of the test's own: events, cache, lists, errors, interrupt."""

import threading

from comfyserve.engine import interrupt, progress
from comfyserve.engine.cache import OutputCache
from comfyserve.engine.execute import Executor, PromptJob
from comfyserve.engine.registry import NodeRegistry


class Number:
    calls = 0

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        Number.calls += 1
        return (value,)


class Add:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT",), "b": ("INT",)}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, a, b):
        return (a + b,)


class Show:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}, "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    def run(self, value, unique_id):
        return {"ui": {"values": [value], "ids": [unique_id]}}


class Range:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"n": ("INT",)}}

    RETURN_TYPES = ("INT",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "run"

    def run(self, n):
        return (list(range(n)),)


class Boom:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        raise ValueError(f"cannot handle {value}")


class Stop:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        interrupt.request_interrupt()
        interrupt.throw_if_interrupted()
        return (value,)


class Steps:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        for step in range(1, 3):
            progress.report(step, 2, ("image/jpeg", b"jpegbytes"))
        return (value,)


class Sink:
    def __init__(self):
        self.events = []

    def send(self, event, data):
        self.events.append((event, data))

    def progress_state(self, event, data):
        self.events.append((event, data))

    def preview(self, node_id, preview, before_progress):
        self.events.append(("preview", {"node": node_id, "before": before_progress, "type": preview[0]}))

    def types(self):
        return [e for e, _ in self.events if e != "progress_state"]


def make_executor(mode="classic"):
    registry = NodeRegistry()
    registry.register_mappings(
        {"Number": Number, "Add": Add, "Show": Show, "Range": Range, "Boom": Boom, "Stop": Stop, "Steps": Steps}
    )
    interrupt.use_flag(threading.Event())
    return Executor(registry=registry, cache=OutputCache(mode=mode))


PROMPT = {
    "1": {"class_type": "Number", "inputs": {"value": 2}},
    "2": {"class_type": "Number", "inputs": {"value": 3}},
    "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
    "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
}


def run(executor, prompt, outputs=("4",)):
    sink = Sink()
    result = executor.execute(PromptJob("p", prompt, {}, list(outputs)), sink)
    return result, sink


def test_success_events_outputs_and_history_messages():
    result, sink = run(make_executor(), PROMPT)
    assert result.status_str == "success" and result.completed
    assert result.outputs == {"4": {"values": [5], "ids": ["4"]}}
    assert result.meta["4"] == {"node_id": "4", "display_node": "4", "parent_node": None, "real_node_id": "4"}
    assert sink.types()[:2] == ["execution_start", "execution_cached"]
    assert [d["node"] for e, d in sink.events if e == "executing"] == ["2", "1", "3", "4"]
    assert sink.types()[-1] == "executed"
    assert [m[0] for m in result.messages] == ["execution_start", "execution_cached", "execution_success"]
    assert result.final_event[0] == "execution_success"


def test_second_run_is_cached_and_output_node_re_sends_executed():
    executor = make_executor()
    run(executor, PROMPT)
    Number.calls = 0
    result, sink = run(executor, PROMPT)
    assert Number.calls == 0
    cached = next(d for e, d in sink.events if e == "execution_cached")
    assert cached["nodes"] == ["1", "2", "3", "4"]
    assert "executing" not in sink.types()
    assert sink.types().count("executed") == 1
    assert result.outputs == {"4": {"values": [5], "ids": ["4"]}}


def test_changed_input_reruns_only_what_depends_on_it():
    executor = make_executor()
    run(executor, PROMPT)
    changed = {**PROMPT, "2": {"class_type": "Number", "inputs": {"value": 10}}}
    result, sink = run(executor, changed)
    assert [d["node"] for e, d in sink.events if e == "executing"] == ["2", "3", "4"]
    assert result.outputs["4"]["values"] == [12]


def test_cache_none_reruns_everything():
    executor = make_executor("none")
    run(executor, PROMPT)
    _, sink = run(executor, PROMPT)
    assert len([e for e in sink.types() if e == "executing"]) == 4


def test_list_outputs_map_over_downstream_nodes():
    prompt = {
        "1": {"class_type": "Range", "inputs": {"n": 3}},
        "2": {"class_type": "Number", "inputs": {"value": 10}},
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
    }
    result, _ = run(make_executor(), prompt)
    assert result.outputs["4"]["values"] == [10, 11, 12]


def test_node_exception_becomes_execution_error_and_drops_the_cache():
    executor = make_executor()
    run(executor, PROMPT)
    prompt = {**PROMPT, "3": {"class_type": "Boom", "inputs": {"value": ["1", 0]}}}
    result, sink = run(executor, prompt)
    assert result.status_str == "error" and not result.completed
    event, data = result.final_event
    assert event == "execution_error"
    assert data["node_id"] == "3" and data["node_type"] == "Boom"
    assert data["exception_type"] == "ValueError"
    assert data["exception_message"] == "cannot handle 2\n"  # ComfyUI appends a newline (and OOM tips)
    assert data["current_inputs"] == {"value": [2]}
    assert isinstance(data["traceback"], list) and data["traceback"]
    assert set(data) >= {"prompt_id", "executed", "current_outputs", "timestamp"}
    # After an error the whole cache is dropped: the good prompt runs every node again.
    _, sink = run(executor, PROMPT)
    assert len([e for e in sink.types() if e == "executing"]) == 4


def test_interrupt_inside_a_node():
    prompt = {**PROMPT, "3": {"class_type": "Stop", "inputs": {"value": ["1", 0]}}}
    result, _ = run(make_executor(), prompt)
    event, data = result.final_event
    assert event == "execution_interrupted"
    assert data["node_id"] == "3" and data["node_type"] == "Stop"
    assert result.status_str == "error" and result.completed is False
    assert result.messages[-1][0] == "execution_interrupted"


def test_progress_reports_send_progress_previews_and_state():
    prompt = {**PROMPT, "3": {"class_type": "Steps", "inputs": {"value": ["1", 0]}}}
    _, sink = run(make_executor(), prompt)
    around = [(e, d) for e, d in sink.events if e in ("progress", "preview")]
    assert [e for e, _ in around] == ["preview", "progress", "preview"] * 2
    assert around[1][1] == {"value": 1, "max": 2, "prompt_id": "p", "node": "3"}
    assert [d["before"] for e, d in around if e == "preview"] == [True, False, True, False]
    states = []
    for event, data in sink.events:
        if event == "progress_state" and "3" in data["nodes"] and data["nodes"]["3"] not in states:
            states.append(data["nodes"]["3"])
    assert [(s["state"], s["value"], s["max"]) for s in states] == [
        ("running", 0.0, 1.0), ("running", 1.0, 2.0), ("running", 2.0, 2.0), ("finished", 2.0, 2.0)]


class ThreadedSteps:
    """Reports progress from a thread of its own, as some packs do."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        worker = threading.Thread(target=lambda: progress.report(1, 4))
        worker.start()
        worker.join()
        return (value,)


def test_progress_reported_from_a_node_thread_reaches_the_node():
    executor = make_executor()
    executor.registry.register_mappings({"ThreadedSteps": ThreadedSteps})
    prompt = {**PROMPT, "3": {"class_type": "ThreadedSteps", "inputs": {"value": ["1", 0]}}}
    _, sink = run(executor, prompt)
    assert [d for e, d in sink.events if e == "progress"] == [{"value": 1, "max": 4, "prompt_id": "p", "node": "3"}]
