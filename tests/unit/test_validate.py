"""Prompt validation on node classes of the test's own: every error type, partial acceptance,
conversions, cycles; and a replay of ComfyUI's captured validation bodies against classes built
from the captured /object_info."""

import copy
import json
import sys

import pytest

from comfyserve.engine.registry import NodeRegistry
from comfyserve.engine.validate import ValidationResult, output_node_ids, validate_prompt
from tests.conftest import reference


class Source:
    """An IMAGE producer with the usual numeric and combo widgets."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "size": ("INT", {"default": 8, "min": 1, "max": 64}),
                "scale": ("FLOAT", {"default": 1.0, "min": 0.5, "max": 2.0}),
                "mode": (["fast", "slow"], {}),
            },
            "optional": {"label": ("STRING", {}), "flag": ("BOOLEAN", {})},
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"


class Latent:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("LATENT", "IMAGE,MASK")
    FUNCTION = "run"


class Filter:
    """IMAGE in, IMAGE out; an optional MASK."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}, "optional": {"mask": ("MASK",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"


class Show:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True


class ShowAny:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",)}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True


class ShowUnion:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("MASK, STRING",)}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True


class Picker:
    """A file picker that validates its own value (as LoadImage does)."""

    seen: list = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": (["a.png", "b.png"], {}), "count": ("INT", {"min": 0, "max": 3})}}

    @classmethod
    def VALIDATE_INPUTS(cls, name, count=0):
        cls.seen.append((name, count))
        return True if name.endswith(".png") else f"Invalid file: {name}"

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"


class Explodes:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {})}}

    @classmethod
    def VALIDATE_INPUTS(cls, value):
        raise RuntimeError(f"validator crashed on {value}")

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"


class TypeAware:
    """Asks for `input_types`, so link types are its own business."""

    received: list = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"thing": ("IMAGE",)}}

    @classmethod
    def VALIDATE_INPUTS(cls, input_types, thing):
        cls.received.append((input_types, thing))
        return True

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"


class Settings:
    """V3-style combo, a long combo, a list widget and a hidden id."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "sampler": ("COMBO", {"options": ["euler", "heun"]}),
                "model": ([f"m{i}.safetensors" for i in range(30)], {}),
                "points": ("LIST", {}),
            },
            "hidden": {"uid": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"


class BrokenSpec:
    @classmethod
    def INPUT_TYPES(cls):
        raise OSError("input folder unreadable")

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"


NODES = {
    cls.__name__: cls
    for cls in (Source, Latent, Filter, Show, ShowAny, ShowUnion, Picker, Explodes, TypeAware, Settings, BrokenSpec)
}


@pytest.fixture
def registry() -> NodeRegistry:
    reg = NodeRegistry()
    reg.register_mappings(NODES)
    return reg


def src(**inputs):
    return {"class_type": "Source", "inputs": {"size": 8, "scale": 1.0, "mode": "fast", **inputs}}


def node(class_type, **inputs):
    return {"class_type": class_type, "inputs": inputs}


def chain(**source_inputs):
    """Source → Filter → Show."""
    return {"1": src(**source_inputs), "2": node("Filter", image=["1", 0]), "3": node("Show", images=["2", 0])}


def only_error(result: ValidationResult, node_id: str) -> dict:
    errors = result.node_errors[node_id]["errors"]
    assert len(errors) == 1, errors
    return errors[0]


def assert_rejected(result: ValidationResult, kind: str = "prompt_outputs_failed_validation") -> None:
    assert result.ok is False
    assert result.error["type"] == kind
    assert result.outputs_to_execute == []


# -- accepted prompts -------------------------------------------------------------------------


def test_valid_prompt_is_accepted_with_its_outputs(registry):
    result = validate_prompt(chain(), registry)
    assert result == ValidationResult(True, None, {}, ["3"])


def test_int_strings_and_floats_are_converted_in_place(registry):
    prompt = chain(size="8", scale="1.5", label=5, flag=0)
    prompt["1"]["inputs"]["size"] = 8.7
    prompt["4"] = src(size="12")
    prompt["5"] = node("Show", images=["4", 0])
    assert validate_prompt(prompt, registry).ok
    assert prompt["1"]["inputs"] == {"size": 8, "scale": 1.5, "mode": "fast", "label": "5", "flag": False}
    assert prompt["4"]["inputs"]["size"] == 12 and type(prompt["4"]["inputs"]["size"]) is int


def test_unknown_inputs_non_numeric_ids_and_int_link_ids_are_accepted(registry):
    prompt = {"a": src(bogus=5), "b": node("Filter", image=["a", 0], extra="x"), "c": node("Show", images=["b", 0])}
    assert validate_prompt(prompt, registry).outputs_to_execute == ["c"]
    numeric = {"1": src(), "2": node("Show", images=[1, 0])}
    assert validate_prompt(numeric, registry).ok


def test_any_type_and_union_types_match_on_either_side(registry):
    prompt = {"1": node("Latent"), "2": node("ShowAny", value=["1", 0]), "3": node("ShowUnion", value=["1", 1])}
    prompt["4"] = node("Filter", image=["1", 1])  # "IMAGE,MASK" feeds an IMAGE input
    prompt["5"] = node("Show", images=["4", 0])
    result = validate_prompt(prompt, registry)
    assert result.ok and result.outputs_to_execute == ["2", "3", "5"]


def test_outputs_are_in_prompt_order_and_output_node_ids_helper(registry):
    prompt = {"9": node("Show", images=["1", 0]), "1": src(), "5": node("Show", images=["1", 0])}
    assert output_node_ids(prompt, registry) == ["9", "5"]
    assert validate_prompt(prompt, registry).outputs_to_execute == ["9", "5"]


def test_missing_inputs_key_means_no_inputs(registry):
    prompt = {"1": node("Latent"), "2": {"class_type": "ShowAny"}}
    del prompt["1"]["inputs"]
    result = validate_prompt(prompt, registry)
    assert only_error(result, "2") == {
        "type": "required_input_missing",
        "message": "Required input is missing",
        "details": "value",
        "extra_info": {"input_name": "value"},
    }


def test_unreachable_nodes_are_not_validated(registry):
    prompt = chain()
    prompt["7"] = src(size=0)  # bad, but feeds no output
    assert validate_prompt(prompt, registry) == ValidationResult(True, None, {}, ["3"])


# -- prompt-level rejections ------------------------------------------------------------------


@pytest.mark.parametrize("prompt", [[1, 2], "hello", None, 5])
def test_prompt_that_is_not_an_object(registry, prompt):
    result = validate_prompt(prompt, registry)
    assert_rejected(result, "invalid_prompt")
    assert "must be a JSON object" in result.error["details"]
    assert result.node_errors == {}


@pytest.mark.parametrize(
    ("bad_node", "message"),
    [
        ("x", "Cannot execute because a node is missing the class_type property."),
        ({"inputs": {}}, "Cannot execute because a node is missing the class_type property."),
        ({"class_type": "Nope", "inputs": {}}, "Cannot execute because node Nope does not exist."),
        ({"class_type": ["Show"], "inputs": {}}, "Cannot execute because node ['Show'] does not exist."),
        ({"class_type": "Show", "inputs": [1]}, "Cannot execute because the inputs of node Show are not a JSON object."),
    ],
)
def test_invalid_node_is_reported_by_id(registry, bad_node, message):
    prompt = chain()
    prompt["2"] = bad_node
    result = validate_prompt(prompt, registry)
    assert_rejected(result, "invalid_prompt")
    assert result.error == {"type": "invalid_prompt", "message": message, "details": "Node ID '#2'", "extra_info": {}}
    assert result.node_errors == {}


def test_no_outputs_and_unknown_partial_targets(registry):
    no_outputs = {"1": src(), "2": node("Filter", image=["1", 0])}
    empty = {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}}
    assert validate_prompt(no_outputs, registry) == ValidationResult(False, empty, {}, [])
    assert validate_prompt({}, registry) == ValidationResult(False, empty, {}, [])
    assert validate_prompt(chain(), registry, ["77"]) == ValidationResult(False, empty, {}, [])
    assert validate_prompt(chain(), registry, ["2"]).error == empty  # not an output node


def test_partial_targets_select_outputs_and_skip_the_rest(registry):
    prompt = chain()
    prompt["4"] = node("Show", images=["99", 0])  # broken, but not targeted
    assert validate_prompt(prompt, registry, ["3"]) == ValidationResult(True, None, {}, ["3"])


# -- per-input errors -------------------------------------------------------------------------


def test_required_input_missing(registry):
    prompt = chain()
    del prompt["1"]["inputs"]["size"]
    result = validate_prompt(prompt, registry)
    assert_rejected(result)
    assert result.error["details"] == ""  # the error is upstream of the output, not on it
    assert result.node_errors == {
        "1": {
            "errors": [
                {"type": "required_input_missing", "message": "Required input is missing", "details": "size",
                 "extra_info": {"input_name": "size"}}
            ],
            "dependent_outputs": ["3"],
            "class_type": "Source",
        }
    }


def test_missing_optional_input_is_fine(registry):
    assert validate_prompt(chain(), registry).ok  # Source.label / Filter.mask absent


@pytest.mark.parametrize(
    ("value", "kind", "message"),
    [
        (0, "value_smaller_than_min", "Value 0 smaller than min of 1"),
        (99, "value_bigger_than_max", "Value 99 bigger than max of 64"),
    ],
)
def test_int_out_of_range(registry, value, kind, message):
    result = validate_prompt(chain(size=value), registry)
    assert_rejected(result)
    assert only_error(result, "1") == {
        "type": kind,
        "message": message,
        "details": "size",
        "extra_info": {
            "input_name": "size",
            "input_config": ["INT", {"default": 8, "min": 1, "max": 64}],
            "received_value": value,
        },
    }


def test_float_out_of_range_reports_converted_value(registry):
    error = only_error(validate_prompt(chain(scale="3"), registry), "1")
    assert error["type"] == "value_bigger_than_max"
    assert error["message"] == "Value 3.0 bigger than max of 2.0"
    assert error["extra_info"]["received_value"] == 3.0


@pytest.mark.parametrize(
    ("name", "value", "kind", "reason"),
    [
        ("size", "abc", "INT", "invalid literal for int() with base 10: 'abc'"),
        ("size", None, "INT", "int() argument must be a string, a bytes-like object or a real number, not 'NoneType'"),
        ("scale", "x", "FLOAT", "could not convert string to float: 'x'"),
    ],
)
def test_unconvertible_values(registry, name, value, kind, reason):
    error = only_error(validate_prompt(chain(**{name: value}), registry), "1")
    assert error["type"] == "invalid_input_type"
    assert error["message"] == f"Failed to convert an input value to a {kind} value"
    assert error["details"] == f"{name}, {value}, {reason}"
    assert error["extra_info"]["received_value"] == value
    assert error["extra_info"]["exception_message"] == reason
    assert set(error["extra_info"]) == {"input_name", "input_config", "received_value", "exception_message"}


def test_two_errors_in_one_node_in_declared_order(registry):
    result = validate_prompt(chain(size=0, scale=9), registry)
    types = [e["type"] for e in result.node_errors["1"]["errors"]]
    assert types == ["value_smaller_than_min", "value_bigger_than_max"]


def test_combo_value_not_in_list(registry):
    error = only_error(validate_prompt(chain(mode="magic"), registry), "1")
    assert error == {
        "type": "value_not_in_list",
        "message": "Value not in list",
        "details": "mode: 'magic' not in ['fast', 'slow']",
        "extra_info": {"input_name": "mode", "input_config": [["fast", "slow"], {}], "received_value": "magic"},
    }


def settings_prompt(**overrides):
    inputs = {"sampler": "euler", "model": "m3.safetensors", "points": {"__value__": [1, 2]}, **overrides}
    return {"1": {"class_type": "Settings", "inputs": inputs}, "2": node("Show", images=["1", 0])}


def test_v3_combo_long_combo_and_wrapped_list_values(registry):
    prompt = settings_prompt()
    assert validate_prompt(prompt, registry).ok
    assert prompt["1"]["inputs"]["points"] == [1, 2]  # unwrapped for execution

    v3 = only_error(validate_prompt(settings_prompt(sampler="dpm"), registry), "1")
    assert v3["details"] == "sampler: 'dpm' not in ['euler', 'heun']"
    long = only_error(validate_prompt(settings_prompt(model="x.ckpt"), registry), "1")
    assert long["details"] == "model: 'x.ckpt' not in (list of length 30)"
    assert long["extra_info"]["input_config"] is None


def test_bad_linked_input_of_wrong_length(registry):
    prompt = chain()
    prompt["2"]["inputs"]["image"] = ["1"]
    result = validate_prompt(prompt, registry)
    assert only_error(result, "2") == {
        "type": "bad_linked_input",
        "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
        "details": "image",
        "extra_info": {"input_name": "image", "input_config": ["IMAGE", {}], "received_value": ["1"]},
    }
    assert result.node_errors["2"]["dependent_outputs"] == ["3"]
    assert result.node_errors["2"]["class_type"] == "Filter"


@pytest.mark.parametrize(
    ("link", "problem"),
    [
        (["1", "a"], "the output index must be a whole number"),
        (["1", True], "the output index must be a whole number"),
        (["1", 0.0], "the output index must be a whole number"),
        ([None, 0], "the node id must be a string"),
    ],
)
def test_malformed_link_is_a_clean_error_on_the_holder(registry, link, problem):
    prompt = chain()
    prompt["2"]["inputs"]["image"] = link
    error = only_error(validate_prompt(prompt, registry), "2")
    assert error["type"] == "bad_linked_input"
    assert error["message"] == f"Input 'image' has a malformed link {json.dumps(link)}: {problem}"
    assert error["extra_info"] == {"input_name": "image", "input_config": ["IMAGE", {}], "received_value": link}


def test_link_to_missing_node(registry):
    prompt = chain()
    prompt["2"]["inputs"]["image"] = ["99", 0]
    result = validate_prompt(prompt, registry)
    assert_rejected(result)
    assert result.node_errors == {
        "2": {
            "errors": [
                {
                    "type": "linked_node_missing",
                    "message": "Input 'image' links to node '99', which is not in the prompt",
                    "details": "image",
                    "extra_info": {"input_name": "image", "input_config": ["IMAGE", {}], "linked_node": ["99", 0]},
                }
            ],
            "dependent_outputs": ["3"],
            "class_type": "Filter",
        }
    }


@pytest.mark.parametrize(
    ("index", "has"),
    [(5, "only 1 output (index 0)"), (-1, "only 1 output (index 0)")],
)
def test_link_to_missing_output(registry, index, has):
    prompt = chain()
    prompt["2"]["inputs"]["image"] = ["1", index]
    error = only_error(validate_prompt(prompt, registry), "2")
    assert error["type"] == "linked_output_missing"
    assert error["message"] == f"Input 'image' links to output {index} of node '1' (Source), which has {has}"
    assert error["extra_info"]["linked_node"] == ["1", index]


def test_link_to_node_without_outputs_and_to_one_with_several(registry):
    prompt = {"1": node("Latent"), "2": node("Show", images=["1", 2]), "3": src(), "4": node("Show", images=["2", 0])}
    result = validate_prompt(prompt, registry)
    assert result.node_errors["2"]["errors"][0]["message"].endswith("which has 2 outputs (indexes 0 to 1)")
    assert result.node_errors["4"]["errors"][0]["message"].endswith("which has no outputs")


def test_undeclared_input_links_must_resolve(registry):
    prompt = chain()
    prompt["2"]["inputs"]["extra"] = ["42", 0]
    error = only_error(validate_prompt(prompt, registry), "2")
    assert error["type"] == "linked_node_missing"
    assert error["extra_info"] == {"input_name": "extra", "input_config": None, "linked_node": ["42", 0]}


def test_return_type_mismatch(registry):
    prompt = chain()
    prompt["4"] = node("Latent")
    prompt["2"]["inputs"]["image"] = ["4", 0]
    error = only_error(validate_prompt(prompt, registry), "2")
    assert error == {
        "type": "return_type_mismatch",
        "message": "Return type mismatch between linked nodes",
        "details": "image, received_type(LATENT) mismatch input_type(IMAGE)",
        "extra_info": {
            "input_name": "image",
            "input_config": ["IMAGE", {}],
            "received_type": "LATENT",
            "linked_node": ["4", 0],
        },
    }


def test_union_without_overlap_mismatches(registry):
    prompt = {"1": src(), "2": node("ShowUnion", value=["1", 0])}
    assert only_error(validate_prompt(prompt, registry), "2")["type"] == "return_type_mismatch"


# -- VALIDATE_INPUTS --------------------------------------------------------------------------


def picker_prompt(**inputs):
    return {"1": node("Picker", **inputs), "2": node("Show", images=["1", 0])}


def test_custom_validation_failure(registry):
    error = only_error(validate_prompt(picker_prompt(name="c.gif", count=1), registry), "1")
    assert error == {
        "type": "custom_validation_failed",
        "message": "Custom validation failed for node",
        "details": "name - Invalid file: c.gif",
        "extra_info": {"input_name": "name"},
    }


def validator_node(validate):
    return type(
        "Checked",
        (),
        {
            "INPUT_TYPES": classmethod(lambda cls: {"required": {"v": ("INT", {})}}),
            "VALIDATE_INPUTS": classmethod(validate),
            "RETURN_TYPES": ("IMAGE",),
        },
    )


async def _async_check(cls, v):
    return True


@pytest.mark.parametrize(
    ("validate", "errors"),
    [
        (lambda cls, v: False, [("custom_validation_failed", "v", {"input_name": "v"})]),
        (lambda cls: "globally wrong", [("custom_validation_failed", "globally wrong", {})]),
        (lambda cls, v: True, []),
        (_async_check, [("exception_during_validation", None, None)]),
    ],
    ids=["false", "no-arguments", "true", "async"],
)
def test_validate_inputs_results(registry, validate, errors):
    registry.register_mappings({"Checked": validator_node(validate)})
    result = validate_prompt({"1": node("Checked", v=1), "2": node("Show", images=["1", 0])}, registry)
    got = result.node_errors.get("1", {"errors": []})["errors"]
    assert [e["type"] for e in got] == [kind for kind, _, _ in errors]
    for error, (kind, details, extra) in zip(got, errors, strict=True):
        if kind == "custom_validation_failed":
            assert (error["details"], error["extra_info"]) == (details, extra)
        else:
            assert "only synchronous validation" in error["details"]


def test_validate_inputs_replaces_builtin_checks_for_the_inputs_it_names(registry):
    Picker.seen.clear()
    result = validate_prompt(picker_prompt(name="z.png", count="2"), registry)  # not in the combo
    assert result.ok
    assert Picker.seen == [("z.png", 2)]  # converted before it is called
    over = validate_prompt(picker_prompt(name="a.png", count=9), registry)
    assert over.ok  # `count` is named by VALIDATE_INPUTS, so max is its business


def test_validate_inputs_skipped_when_its_argument_is_missing(registry):
    Picker.seen.clear()
    result = validate_prompt(picker_prompt(count=1), registry)
    assert [e["type"] for e in result.node_errors["1"]["errors"]] == ["required_input_missing"]
    assert Picker.seen == []


def test_exception_in_validate_inputs_becomes_an_error(registry):
    prompt = {"1": node("Explodes", value=3), "2": node("Show", images=["1", 0])}
    error = only_error(validate_prompt(prompt, registry), "1")
    assert error["type"] == "exception_during_validation"
    assert error["message"] == "Exception when validating node"
    assert error["details"] == "validator crashed on 3"
    assert error["extra_info"]["exception_message"] == "validator crashed on 3"
    assert error["extra_info"]["exception_type"] == "RuntimeError"
    assert any("validator crashed" in line or "VALIDATE_INPUTS" in line for line in error["extra_info"]["traceback"])


def test_exception_in_input_types_becomes_an_error(registry):
    prompt = {"1": node("BrokenSpec"), "2": node("Show", images=["1", 0])}
    error = only_error(validate_prompt(prompt, registry), "1")
    assert error["type"] == "exception_during_validation"
    assert error["extra_info"]["exception_type"] == "OSError"


def test_exception_while_checking_one_input_is_reported_on_it(registry):
    class Weird:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"level": ("LEVEL", {"min": 0})}}  # a custom type: no conversion

        RETURN_TYPES = ("IMAGE",)

    registry.register_mappings({"Weird": Weird})
    prompt = {"1": node("Weird", level="high"), "2": node("Show", images=["1", 0])}
    error = only_error(validate_prompt(prompt, registry), "1")
    assert error["type"] == "exception_during_validation"
    assert error["extra_info"]["input_name"] == "level"
    assert error["extra_info"]["exception_type"] == "TypeError"


def test_input_types_argument_gets_link_types_and_skips_type_check(registry):
    TypeAware.received.clear()
    prompt = {"1": node("Latent"), "2": node("TypeAware", thing=["1", 0]), "3": node("Show", images=["2", 0])}
    assert validate_prompt(prompt, registry).ok
    assert TypeAware.received == [({"thing": "LATENT"}, None)]  # links have no value yet


def test_hidden_unique_id_kwargs_and_json_safe_configs(registry):
    class Odd:
        @classmethod
        def INPUT_TYPES(cls):
            return {
                "required": {"v": ("INT", {"min": 0}), "img": ("IMAGE", {"marker": object()})},
                "hidden": {"uid": "UNIQUE_ID"},
            }

        @classmethod
        def VALIDATE_INPUTS(cls, uid, **kwargs):
            return f"node {uid} says no"

        RETURN_TYPES = ("IMAGE",)

    registry.register_mappings({"Odd": Odd})
    prompt = {"L": node("Latent"), "n7": node("Odd", v=-1, img=["L", 0]), "2": node("Show", images=["n7", 0])}
    result = validate_prompt(prompt, registry)
    errors = result.node_errors["n7"]["errors"]
    custom = [e for e in errors if e["type"] == "custom_validation_failed"]
    assert [(e["details"], e["extra_info"]) for e in custom] == [("uid - node n7 says no", {"input_name": "uid"})]
    mismatch = [e for e in errors if e["type"] == "return_type_mismatch"]
    assert mismatch[0]["extra_info"]["input_config"][1]["marker"].startswith("<object object")
    json.dumps(result.node_errors)  # must not raise


# -- graph-level behaviour ---------------------------------------------------------------------


def test_partial_accept_reports_failed_outputs(registry):
    prompt = chain()
    prompt["4"] = node("Show", images=["99", 0])
    result = validate_prompt(prompt, registry)
    assert result.ok and result.error is None
    assert result.outputs_to_execute == ["3"]
    assert list(result.node_errors) == ["4"]
    assert result.node_errors["4"]["dependent_outputs"] == ["4"]
    assert result.node_errors["4"]["class_type"] == "Show"


def test_dependent_outputs_name_only_outputs_that_depend_on_the_node(registry):
    prompt = {
        "1": src(size=0),
        "2": src(size=99),
        "3": node("Show", images=["1", 0]),
        "4": node("Show", images=["2", 0]),
        "5": node("Filter", image=["1", 0]),
        "6": node("Show", images=["5", 0]),
    }
    result = validate_prompt(prompt, registry)
    assert_rejected(result)
    assert result.node_errors["1"]["dependent_outputs"] == ["3", "6"]
    assert result.node_errors["2"]["dependent_outputs"] == ["4"]
    assert "5" not in result.node_errors  # fails only because of node 1


def test_errors_on_the_output_itself_are_summarised(registry):
    result = validate_prompt({"1": node("Show")}, registry)
    assert result.error["details"] == "Required input is missing: images"


def test_errors_behind_a_type_mismatch_are_also_reported(registry):
    prompt = {"1": src(size=0), "2": node("ShowUnion", value=["1", 0])}  # IMAGE into "MASK, STRING"
    result = validate_prompt(prompt, registry)
    assert {n: [e["type"] for e in v["errors"]] for n, v in result.node_errors.items()} == {
        "1": ["value_smaller_than_min"],
        "2": ["return_type_mismatch"],
    }


def test_self_loop_is_named(registry):
    prompt = {"1": node("Filter", image=["1", 0]), "3": node("Show", images=["1", 0])}
    result = validate_prompt(prompt, registry)
    assert_rejected(result)
    assert result.node_errors == {
        "1": {
            "errors": [
                {
                    "type": "dependency_cycle",
                    "message": "Input 'image' links to an output of its own node '1'",
                    "details": "image",
                    "extra_info": {
                        "input_name": "image",
                        "input_config": ["IMAGE", {}],
                        "linked_node": ["1", 0],
                        "cycle": ["1", "1"],
                    },
                }
            ],
            "dependent_outputs": ["3"],
            "class_type": "Filter",
        }
    }


def test_cycle_names_every_member_with_the_loop(registry):
    prompt = {
        "1": node("Filter", image=["3", 0]),
        "2": node("Filter", image=["1", 0]),
        "3": node("Filter", image=["2", 0]),
        "4": node("Show", images=["3", 0]),
        "5": src(),
        "6": node("Show", images=["5", 0]),
    }
    result = validate_prompt(prompt, registry)
    assert result.ok and result.outputs_to_execute == ["6"]  # the loop does not sink the other output
    assert set(result.node_errors) == {"1", "2", "3"}
    first = only_error(result, "1")
    assert first["type"] == "dependency_cycle"
    assert first["message"] == "Input 'image' links to node '3', which depends on node '1' in turn: 1 -> 2 -> 3 -> 1"
    assert first["extra_info"]["cycle"] == ["1", "2", "3", "1"]
    assert all(entry["dependent_outputs"] == ["4"] for entry in result.node_errors.values())


def test_cycle_through_an_optional_input_only_blames_closing_links(registry):
    prompt = {"1": src(), "2": node("Filter", image=["1", 0], mask=["3", 0]), "3": node("Filter", image=["2", 0])}
    prompt["4"] = node("Show", images=["3", 0])
    result = validate_prompt(prompt, registry)
    assert set(result.node_errors) == {"2", "3"}
    mask_errors = [e for e in result.node_errors["2"]["errors"] if e["type"] == "dependency_cycle"]
    assert [e["extra_info"]["input_name"] for e in mask_errors] == ["mask"]


def _stack_depth() -> int:
    frame, depth = sys._getframe(), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


def test_a_long_chain_validates_without_recursing(registry):
    # Speed is the benchmark's business (POST /prompt latency in bench/server_overhead.py); here:
    # a 5,000-node chain validates with room for only a few dozen more stack frames.
    prompt = {"0": src()}
    for i in range(1, 5000):
        prompt[str(i)] = node("Filter", image=[str(i - 1), 0])
    prompt["out"] = node("Show", images=["4999", 0])
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(_stack_depth() + 60)
    try:
        result = validate_prompt(prompt, registry)
    finally:
        sys.setrecursionlimit(limit)
    assert result.ok


# -- ComfyUI's captured bodies ----------------------------------------------------------------

IMPROVED = {  # records where ComfyUI crashed inside validation: ours answers a clean error instead
    "missing inputs key": {"2": (["required_input_missing"], ["3"])},
    "link to nonexistent node": {"2": (["linked_node_missing"], ["3"])},
    "link to wrong output index": {"2": (["linked_output_missing"], ["3"])},
    "link with non-int index": {"2": (["bad_linked_input"], ["3"])},
    "cycle": {"1": (["dependency_cycle"], ["3"]), "2": (["dependency_cycle"], ["3"])},
    "self loop": {"1": (["dependency_cycle"], ["3"])},
    "two outputs, one invalid (partial accept?)": {"4": (["linked_node_missing"], ["4"])},
}


def captured_registry() -> NodeRegistry:
    """Classes with the captured /object_info inputs and outputs; LoadImage knows no files."""
    registry = NodeRegistry()
    for name, info in reference("object_info_full.json")["body"].items():
        attrs = {
            "INPUT_TYPES": classmethod(lambda cls, spec=info["input"]: copy.deepcopy(spec)),
            "RETURN_TYPES": tuple(info["output"]),
            "OUTPUT_NODE": info["output_node"],
        }
        if name == "LoadImage":
            attrs["VALIDATE_INPUTS"] = classmethod(lambda cls, image: f"Invalid image file: {image}")
        registry.register_mappings({name: type(name, (), attrs)})
    return registry


def captured_prompts():
    for name, record in reference("prompt_validation.json").items():
        body = record["request"].get("json")
        if isinstance(body, dict) and isinstance(body.get("prompt"), dict):
            yield pytest.param(body, record["response"], id=name)


@pytest.fixture(scope="module")
def comfy_registry() -> NodeRegistry:
    return captured_registry()


@pytest.mark.parametrize(("body", "response"), list(captured_prompts()))
def test_captured_bodies(comfy_registry, body, response, request):
    name = request.node.callspec.id
    result = validate_prompt(copy.deepcopy(body["prompt"]), comfy_registry, body.get("partial_execution_targets"))
    expected = response["body"]["json"]
    assert result.ok is (response["status"] == 200)
    if not result.ok:
        assert result.error == expected["error"]
    if name in IMPROVED:
        got = {n: ([e["type"] for e in v["errors"]], v["dependent_outputs"]) for n, v in result.node_errors.items()}
        assert got == IMPROVED[name]
        for node_id, entry in result.node_errors.items():
            assert entry["class_type"] == body["prompt"][node_id]["class_type"]
    else:
        assert result.node_errors == expected["node_errors"]
