"""Checking one node of a submitted prompt: its links, widget values and its own VALIDATE_INPUTS.

The error objects are ComfyUI's (`{"type", "message", "details", "extra_info"}`) with the same
types, texts and extra_info keys, so clients that show ComfyUI's errors show ours. Where ComfyUI
crashes on a bad link (a missing node, a missing output, a malformed reference) the error here
is a clean one about the node and input that hold the link.

Widget values are converted in place (`"8"` → 8 for INT, as ComfyUI does), so the prompt that
is queued and executed carries the converted values.
"""

from __future__ import annotations

import inspect
import json
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from comfyserve.engine.execute import exception_type_name
from comfyserve.engine.graph import is_link
from comfyserve.engine.registry import input_types, return_types

ANY_TYPE = "*"
COMBO_TYPE = "COMBO"
LONG_COMBO = 20  # longer option lists are summarised, not echoed back
CONVERTERS: dict[str, Callable[[Any], Any]] = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


@dataclass(frozen=True)
class InputSpec:
    """One declared input of a node class."""

    name: str
    category: str  # "required" or "optional"
    type: Any  # a type name, or a list of options for a combo
    options: dict[str, Any]

    def config(self) -> list[Any]:
        """ComfyUI's `input_config`: `[type, options]`, made safe to encode as JSON."""
        return [json_safe(self.type), json_safe(self.options)]


@dataclass(frozen=True)
class Link:
    """A well-formed link from `input_name` to output `index` of node `source`."""

    input_name: str
    source: str
    index: int
    spec: InputSpec | None  # None for an input the node class does not declare


@dataclass
class NodeCheck:
    """What checking one node found: its own errors and the links it depends on."""

    errors: list[dict[str, Any]] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)


@dataclass(frozen=True)
class ValidateFunction:
    """A node class's VALIDATE_INPUTS and the arguments it asks for."""

    function: Callable[..., Any]
    args: tuple[str, ...]
    required_args: frozenset[str]
    takes_kwargs: bool

    def handles(self, input_name: str) -> bool:
        """Does the node validate this input itself (so the built-in range/combo checks are skipped)?"""
        return self.takes_kwargs or input_name in self.args


@dataclass(frozen=True)
class NodeClassInfo:
    """What validation needs from a node class, read once per validation."""

    cls: type
    inputs: dict[str, InputSpec]
    hidden: dict[str, Any]
    validate: ValidateFunction | None


def json_safe(value: Any) -> Any:
    """A copy of `value` that json.dumps accepts (node specs may hold arbitrary objects)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return str(value)


def error(kind: str, message: str, details: str, **extra_info: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info}


def exception_error(exc: BaseException, kind: str, message: str, **extra_info: Any) -> dict[str, Any]:
    """An error object describing an exception raised while validating."""
    return error(
        kind,
        message,
        str(exc),
        **extra_info,
        exception_message=str(exc),
        exception_type=exception_type_name(exc),
        traceback=traceback.format_tb(exc.__traceback__),
    )


def read_class_info(cls: type) -> NodeClassInfo:
    """Read a node class's declared inputs (required first, then optional) and VALIDATE_INPUTS."""
    spec = input_types(cls)
    inputs: dict[str, InputSpec] = {}
    for category in ("required", "optional"):
        section = spec.get(category) or {}
        for name, declared in section.items():
            if name not in inputs:
                inputs[name] = _input_spec(name, category, declared)
    hidden = spec.get("hidden") or {}
    return NodeClassInfo(cls, inputs, hidden if isinstance(hidden, dict) else {}, _validate_function(cls))


def _input_spec(name: str, category: str, declared: Any) -> InputSpec:
    if isinstance(declared, (list, tuple)) and declared:
        kind = declared[0]
        options = declared[1] if len(declared) > 1 and isinstance(declared[1], dict) else {}
    else:
        kind, options = declared, {}
    return InputSpec(name, category, kind, options)


def _validate_function(cls: type) -> ValidateFunction | None:
    function = getattr(cls, "VALIDATE_INPUTS", None)
    if function is None:
        return None
    spec = inspect.getfullargspec(function)
    without_default = spec.args[: len(spec.args) - len(spec.defaults or ())]
    if inspect.ismethod(function):
        without_default = without_default[1:]  # the bound `cls`
    return ValidateFunction(function, tuple(spec.args), frozenset(without_default), spec.varkw is not None)


def types_match(received: Any, expected: Any) -> bool:
    """ComfyUI's link type rule: equal, `*` on either side, or overlapping comma-separated unions."""
    if not received != expected:  # `not !=` so str subclasses that override __ne__ (any-type hacks) match
        return True
    if received == ANY_TYPE or expected == ANY_TYPE:
        return True
    if isinstance(received, list) and expected == COMBO_TYPE:
        return True  # nodes that output a list of options feed combo inputs
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    received_set = {part.strip() for part in received.split(",")}
    expected_set = {part.strip() for part in expected.split(",")}
    if ANY_TYPE in received_set or ANY_TYPE in expected_set:
        return True
    return bool(received_set & expected_set)


class NodeChecker:
    """Checks nodes of one prompt; class information is read once per class."""

    def __init__(self, prompt: dict[str, dict[str, Any]], lookup: Callable[[str], type]) -> None:
        self.prompt = prompt
        self.lookup = lookup
        self._classes: dict[str, NodeClassInfo] = {}

    def class_info(self, class_type: str) -> NodeClassInfo:
        info = self._classes.get(class_type)
        if info is None:
            info = self._classes[class_type] = read_class_info(self.lookup(class_type))
        return info

    def check(self, node_id: str) -> NodeCheck:
        """Check one node; any exception from node code becomes an error, never escapes."""
        result = NodeCheck()
        node = self.prompt[node_id]
        try:
            info = self.class_info(node["class_type"])
        except Exception as exc:
            result.errors.append(exception_error(exc, "exception_during_validation", "Exception when validating node"))
            return result
        inputs = node.get("inputs", {})
        received_types: dict[str, Any] = {}
        for spec in info.inputs.values():
            with _reported(result, spec.name):
                self._check_input(info, spec, inputs, result, received_types)
        for name, value in inputs.items():
            if name not in info.inputs:
                with _reported(result, name):
                    self._check_undeclared_link(name, value, result)
        if info.validate is not None:
            with _reported(result, None):
                self._run_validate_inputs(node_id, info, info.validate, inputs, received_types, result)
        return result

    # -- declared inputs ---------------------------------------------------------------------
    def _check_input(
        self,
        info: NodeClassInfo,
        spec: InputSpec,
        inputs: dict[str, Any],
        result: NodeCheck,
        received_types: dict[str, Any],
    ) -> None:
        name = spec.name
        if name not in inputs:
            if spec.category == "required":
                result.errors.append(
                    error("required_input_missing", "Required input is missing", name, input_name=name)
                )
            return
        value = inputs[name]
        if isinstance(value, list):
            self._check_link(info, spec, value, result, received_types)
        else:
            self._check_value(info, spec, inputs, value, result)

    def _check_link(
        self,
        info: NodeClassInfo,
        spec: InputSpec,
        value: list[Any],
        result: NodeCheck,
        received_types: dict[str, Any],
    ) -> None:
        link_error = self._link_error(spec.name, value, spec)
        if link_error is not None:
            result.errors.append(link_error)
            return
        source, index = str(value[0]), value[1]
        received = return_types(self.lookup(self.prompt[source]["class_type"]))[index]
        received_types[spec.name] = received
        result.links.append(Link(spec.name, source, index, spec))
        wants_types = info.validate is not None and "input_types" in info.validate.args
        if not wants_types and not types_match(received, spec.type):
            result.errors.append(
                error(
                    "return_type_mismatch",
                    "Return type mismatch between linked nodes",
                    f"{spec.name}, received_type({received}) mismatch input_type({spec.type})",
                    input_name=spec.name,
                    input_config=spec.config(),
                    received_type=json_safe(received),
                    linked_node=value,
                )
            )

    def _link_error(self, name: str, value: list[Any], spec: InputSpec | None) -> dict[str, Any] | None:
        """Why `value` is not a usable link (malformed, missing node, missing output), or None."""
        config = spec.config() if spec is not None else None
        if len(value) != 2:
            return error(
                "bad_linked_input",
                "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                name,
                input_name=name,
                input_config=config,
                received_value=value,
            )
        source, index = value
        if isinstance(source, bool) or not isinstance(source, (str, int)):
            problem = "the node id must be a string"
        elif isinstance(index, bool) or not isinstance(index, int):
            problem = "the output index must be a whole number"
        else:
            problem = None
        if problem is not None:
            return error(
                "bad_linked_input",
                f"Input '{name}' has a malformed link {json.dumps(value)}: {problem}",
                name,
                input_name=name,
                input_config=config,
                received_value=value,
            )
        source = str(source)
        if source not in self.prompt:
            return error(
                "linked_node_missing",
                f"Input '{name}' links to node '{source}', which is not in the prompt",
                name,
                input_name=name,
                input_config=config,
                linked_node=value,
            )
        class_type = self.prompt[source]["class_type"]
        count = len(return_types(self.lookup(class_type)))
        if not 0 <= index < count:
            return error(
                "linked_output_missing",
                f"Input '{name}' links to output {index} of node '{source}' ({class_type}), "
                f"which has {_count_outputs(count)}",
                name,
                input_name=name,
                input_config=config,
                linked_node=value,
            )
        return None

    def _check_undeclared_link(self, name: str, value: Any, result: NodeCheck) -> None:
        """Inputs the class does not declare are accepted, but their links must still resolve."""
        if not is_link(value):
            return
        link_error = self._link_error(name, value, None)
        if link_error is not None:
            result.errors.append(link_error)
        else:
            result.links.append(Link(name, str(value[0]), value[1], None))

    # -- widget values -----------------------------------------------------------------------
    def _check_value(
        self, info: NodeClassInfo, spec: InputSpec, inputs: dict[str, Any], value: Any, result: NodeCheck
    ) -> None:
        name = spec.name
        if isinstance(value, dict) and "__value__" in value:
            value = inputs[name] = value["__value__"]  # list widget values travel wrapped
        convert = CONVERTERS.get(spec.type) if isinstance(spec.type, str) else None
        if convert is not None:
            try:
                converted = convert(value)
            except Exception as exc:
                result.errors.append(
                    error(
                        "invalid_input_type",
                        f"Failed to convert an input value to a {spec.type} value",
                        f"{name}, {value}, {exc}",
                        input_name=name,
                        input_config=spec.config(),
                        received_value=value,
                        exception_message=str(exc),
                    )
                )
                return
            value = inputs[name] = converted
        if info.validate is not None and info.validate.handles(name):
            return
        range_error = _range_error(spec, value)
        if range_error is not None:
            result.errors.append(range_error)
            return
        options = _combo_options(spec)
        if options is not None and value not in options:
            long = len(options) > LONG_COMBO
            listed = f"(list of length {len(options)})" if long else str(options)
            result.errors.append(
                error(
                    "value_not_in_list",
                    "Value not in list",
                    f"{name}: '{value}' not in {listed}",
                    input_name=name,
                    input_config=None if long else spec.config(),
                    received_value=value,
                )
            )

    # -- the node's own VALIDATE_INPUTS ------------------------------------------------------
    def _run_validate_inputs(
        self,
        node_id: str,
        info: NodeClassInfo,
        validate: ValidateFunction,
        inputs: dict[str, Any],
        received_types: dict[str, Any],
        result: NodeCheck,
    ) -> None:
        arguments = self._validate_arguments(node_id, info, validate, inputs, received_types)
        missing = validate.required_args - arguments.keys()
        if missing and any(
            e["type"] == "required_input_missing" and e["details"] in missing for e in result.errors
        ):
            return  # it could only fail on the argument already reported missing
        returned = _call_over_lists(info.cls, validate.function, arguments)
        name = _first_input_argument(validate, arguments)
        for failure in returned:
            if failure is True:
                continue
            # ComfyUI repeats each failure once per argument; one error, on the first input, says it once
            details = name or ""
            if failure is not False:
                details = f"{name} - {failure}" if name else str(failure)
            extra = {"input_name": name} if name else {}
            result.errors.append(error("custom_validation_failed", "Custom validation failed for node", details, **extra))

    def _validate_arguments(
        self,
        node_id: str,
        info: NodeClassInfo,
        validate: ValidateFunction,
        inputs: dict[str, Any],
        received_types: dict[str, Any],
    ) -> dict[str, list[Any]]:
        """The values VALIDATE_INPUTS asks for, as ComfyUI passes them before execution: one-item
        lists, links as None (their values do not exist yet)."""
        values: dict[str, list[Any]] = {}
        for name, value in inputs.items():
            spec = info.inputs.get(name)
            if is_link(value) and not (spec is not None and spec.options.get("rawLink")):
                values[name] = [None]
            elif spec is not None or name in info.hidden:
                values[name] = [value]
        for name, kind in info.hidden.items():
            if kind == "UNIQUE_ID":
                values[name] = [node_id]
            elif kind == "PROMPT":
                values[name] = [self.prompt]
            elif isinstance(kind, str):
                values[name] = [None]  # extra_data is not known while validating
        arguments = {name: v for name, v in values.items() if validate.handles(name)}
        if "input_types" in validate.args:
            arguments["input_types"] = [received_types]
        return arguments


@contextmanager
def _reported(result: NodeCheck, input_name: str | None) -> Iterator[None]:
    """Turn an exception raised while checking (usually by node code) into the node's error."""
    try:
        yield
    except Exception as exc:
        extra = {"input_name": input_name} if input_name is not None else {}
        result.errors.append(exception_error(exc, "exception_during_validation", "Exception when validating node", **extra))


def _first_input_argument(validate: ValidateFunction, arguments: dict[str, Any]) -> str | None:
    """The input a failed VALIDATE_INPUTS is reported on: its first named argument that was passed."""
    named = [a for a in validate.args if a in arguments and a != "input_types"]
    rest = [a for a in arguments if a != "input_types" and a not in named]
    return (named + rest + [None])[0]


def _count_outputs(count: int) -> str:
    if count == 0:
        return "no outputs"
    if count == 1:
        return "only 1 output (index 0)"
    return f"{count} outputs (indexes 0 to {count - 1})"


def _range_error(spec: InputSpec, value: Any) -> dict[str, Any] | None:
    low, high = spec.options.get("min"), spec.options.get("max")
    if low is not None and value < low:
        return error(
            "value_smaller_than_min",
            f"Value {value} smaller than min of {low}",
            spec.name,
            input_name=spec.name,
            input_config=spec.config(),
            received_value=value,
        )
    if high is not None and value > high:
        return error(
            "value_bigger_than_max",
            f"Value {value} bigger than max of {high}",
            spec.name,
            input_name=spec.name,
            input_config=spec.config(),
            received_value=value,
        )
    return None


def _combo_options(spec: InputSpec) -> list[Any] | None:
    if isinstance(spec.type, list):
        return spec.type
    if spec.type == COMBO_TYPE:
        options = spec.options.get("options", [])
        return list(options) if isinstance(options, (list, tuple)) else []
    return None


def _call_over_lists(cls: type, function: Callable[..., Any], arguments: dict[str, list[Any]]) -> list[Any]:
    """Call `function` once per list item (shorter lists repeat their last item), or once with the
    whole lists for INPUT_IS_LIST nodes — ComfyUI's way of calling node methods."""
    if getattr(cls, "INPUT_IS_LIST", False):
        calls = [arguments]
    else:
        longest = max((len(v) for v in arguments.values()), default=0)
        calls = [{k: v[min(i, len(v) - 1)] for k, v in arguments.items() if v} for i in range(max(longest, 1))]
    returned = []
    for kwargs in calls:
        value = function(**kwargs)
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()
            raise TypeError("VALIDATE_INPUTS returned an awaitable; only synchronous validation is supported")
        returned.append(value)
    return returned
