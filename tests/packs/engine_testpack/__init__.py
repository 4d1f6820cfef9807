"""A custom node pack written against ComfyUI's node protocol, to drive the engine through a real
server: lazy inputs, expansion (including a recursive loop), blockers, lists, async sleepers,
IS_CHANGED and VALIDATE_INPUTS variants, and a node that raises. It imports only the modules a
ComfyUI pack may import (`comfy_execution.*`), as a pack would."""

import asyncio

from comfy_execution.graph import ExecutionBlocker
from comfy_execution.graph_utils import GraphBuilder

RUNS: dict = {}


class TestIntConst:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": -(2**31), "max": 2**31})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "_test"

    def run(self, value):
        return (value,)


class TestAddOne:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "_test"

    def run(self, value):
        return (value + 1,)


class TestLazyMix:
    """a·(1−t) + b·t; only evaluates the side(s) the weight needs."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"t": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0}),
                             "a": ("INT", {"lazy": True, "forceInput": True}),
                             "b": ("INT", {"lazy": True, "forceInput": True})}}

    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "run"
    CATEGORY = "_test"

    def check_lazy_status(self, t, a=None, b=None):
        needed = []
        if t < 1.0 and a is None:
            needed.append("a")
        if t > 0.0 and b is None:
            needed.append("b")
        return needed

    def run(self, t, a=None, b=None):
        return ((a or 0) * (1 - t) + (b or 0) * t,)


class TestRepeatAdd:
    """Expands into `times` TestAddOne nodes built with GraphBuilder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True}), "times": ("INT", {"default": 1, "min": 0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "_test"

    def run(self, value, times):
        graph = GraphBuilder()
        current = value
        for _ in range(times):
            node = graph.node("TestAddOne", value=current)
            current = node.out(0)
        return {"result": (current,), "expand": graph.finalize()}


class TestCountdown:
    """A loop by recursion: adds one and expands into itself until `remaining` is 0."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True}), "remaining": ("INT", {"default": 0, "min": 0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "_test"

    def run(self, value, remaining):
        if remaining <= 0:
            return (value,)
        graph = GraphBuilder()
        step = graph.node("TestAddOne", value=value)
        again = graph.node("TestCountdown", value=step.out(0), remaining=remaining - 1)
        return {"result": (again.out(0),), "expand": graph.finalize()}


class TestGate:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True}), "open": ("BOOLEAN", {"default": True}),
                             "message": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "_test"

    def run(self, value, open, message):
        return (value,) if open else (ExecutionBlocker(message or None),)


class TestListRange:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"n": ("INT", {"default": 3, "min": 0})}}

    RETURN_TYPES = ("INT",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "run"
    CATEGORY = "_test"

    def run(self, n):
        return (list(range(n)),)


class TestListSum:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"values": ("INT", {"forceInput": True})}}

    RETURN_TYPES = ("INT",)
    INPUT_IS_LIST = True
    FUNCTION = "run"
    CATEGORY = "_test"

    def run(self, values):
        return (sum(values),)


class TestAsyncSleep:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True}),
                             "seconds": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 10.0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "_test"

    async def run(self, value, seconds):
        await asyncio.sleep(seconds)
        return (value,)


class TestVolatile:
    """IS_CHANGED answers NaN: never cached."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "_test"

    @classmethod
    def IS_CHANGED(cls, value):
        return float("nan")

    def run(self, value):
        return (value,)


class TestChangedBy:
    """IS_CHANGED answers its `key`: cached while the key stays the same."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0}), "key": ("STRING", {"default": "a"})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "_test"

    @classmethod
    def IS_CHANGED(cls, value, key):
        return key

    def run(self, value, key):
        return (value,)


class TestEvenOnly:
    """VALIDATE_INPUTS rejects odd values with its own message."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "_test"

    @classmethod
    def VALIDATE_INPUTS(cls, value):
        return True if value % 2 == 0 else "value must be even"

    def run(self, value):
        return (value,)


class TestAnyInput:
    """VALIDATE_INPUTS with `input_types`: accepts any link type, but only INT or FLOAT."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*", {})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    CATEGORY = "_test"

    @classmethod
    def VALIDATE_INPUTS(cls, input_types):
        return True if input_types.get("value") in ("INT", "FLOAT") else f"cannot take {input_types.get('value')}"

    def run(self, value):
        return (str(value),)


class TestRaise:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "_test"

    def run(self, value):
        raise RuntimeError(f"deliberate failure on {value}")


class TestOutput:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*", {})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "run"
    CATEGORY = "_test"

    def run(self, value):
        return {"ui": {"text": [str(v) for v in (value if isinstance(value, list) else [value])]}}


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (
    TestIntConst, TestAddOne, TestLazyMix, TestRepeatAdd, TestCountdown, TestGate, TestListRange, TestListSum,
    TestAsyncSleep, TestVolatile, TestChangedBy, TestEvenOnly, TestAnyInput, TestRaise, TestOutput,
)}
NODE_DISPLAY_NAME_MAPPINGS = {"TestLazyMix": "Test Lazy Mix"}
