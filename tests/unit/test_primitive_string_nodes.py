"""Primitive, string and PreviewAny nodes: /object_info entries equal ComfyUI 0.8's; their results."""

from __future__ import annotations

import json
import re

import pytest
import torch

import nodes
from comfyserve.engine.registry import NodeRegistry
from nodes.preview_any import PreviewAny, as_text
from nodes.primitives import (
    PrimitiveBoolean,
    PrimitiveFloat,
    PrimitiveInt,
    PrimitiveString,
    PrimitiveStringMultiline,
)
from nodes.strings import (
    CaseConverter,
    RegexExtract,
    RegexMatch,
    RegexReplace,
    StringCompare,
    StringConcatenate,
    StringContains,
    StringLength,
    StringReplace,
    StringSubstring,
    StringTrim,
)
from tests.conftest import reference

NODES = [
    "PrimitiveString", "PrimitiveStringMultiline", "PrimitiveInt", "PrimitiveFloat", "PrimitiveBoolean",
    "StringConcatenate", "StringSubstring", "StringLength", "CaseConverter", "StringTrim", "StringReplace",
    "StringContains", "StringCompare", "RegexMatch", "RegexExtract", "RegexReplace", "PreviewAny",
]


def registry() -> NodeRegistry:
    found = NodeRegistry()
    found.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    return found


def test_object_info_entries_equal_comfyui():
    described = registry()
    expected = reference("object_info_full.json")["body"]
    for class_type in NODES:
        assert json.loads(json.dumps(described.node_info(class_type))) == expected[class_type], class_type
    alone = reference("object_info_misc.json")["GET /object_info/PrimitiveInt (v3 schema node)"]
    assert json.loads(json.dumps(described.node_info("PrimitiveInt"))) == alone["response"]["body"]["json"]["PrimitiveInt"]


def test_primitives_pass_their_value_through():
    assert PrimitiveInt().execute(-7) == (-7,)
    assert PrimitiveFloat().execute(0.25) == (0.25,)
    assert PrimitiveString().execute("a") == ("a",)
    assert PrimitiveStringMultiline().execute("a\nb") == ("a\nb",)
    assert PrimitiveBoolean().execute(False) == (False,)


def test_concatenate_substring_length_replace():
    assert StringConcatenate().execute("a", "b", ", ") == ("a, b",)
    assert StringSubstring().execute("abcdef", 1, -1) == ("bcde",)
    assert StringLength().execute("héllo") == (5,)
    assert StringReplace().execute("a-b-c", "-", "+") == ("a+b+c",)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("UPPERCASE", "HELLO WORLD"), ("lowercase", "hello world"), ("Capitalize", "Hello world"), ("Title Case", "Hello World")],
)
def test_case_converter(mode, expected):
    assert CaseConverter().execute("hELLO wORLD", mode) == (expected,)


def test_trim_modes():
    text = "  x \n"
    assert [StringTrim().execute(text, mode)[0] for mode in ("Both", "Left", "Right")] == ["x", "x \n", "  x"]


def test_contains_and_compare_with_and_without_case():
    assert StringContains().execute("Hello", "ELL", True) == (False,)
    assert StringContains().execute("Hello", "ELL", False) == (True,)
    assert StringCompare().execute("Hello", "he", "Starts With", False) == (True,)
    assert StringCompare().execute("Hello", "he", "Starts With", True) == (False,)
    assert StringCompare().execute("Hello", "LO", "Ends With", False) == (True,)
    assert StringCompare().execute("a", "A", "Equal", True) == (False,)


def test_regex_match_flags_and_bad_patterns():
    assert RegexMatch().execute("Line1\nline2", "^LINE2$", True, True, False) == (True,)
    assert RegexMatch().execute("Line1\nline2", "^LINE2$", True, False, False) == (False,)
    assert RegexMatch().execute("a\nb", "a.b", False, False, True) == (True,)
    assert RegexMatch().execute("abc", "(", True, False, False) == (False,)


@pytest.mark.parametrize(
    ("mode", "group", "expected"),
    [
        ("First Match", 1, "a1"),
        ("All Matches", 1, "a\nb"),  # with groups, findall yields them; the first group is kept
        ("First Group", 2, "1"),
        ("All Groups", 2, "1\n2"),
        ("First Group", 3, ""),  # no such group
    ],
)
def test_regex_extract(mode, group, expected):
    assert RegexExtract().execute("x a1 b2", r"([a-z])(\d)", mode, True, False, False, group) == (expected,)


def test_regex_extract_without_groups_and_bad_patterns():
    assert RegexExtract().execute("a1 b2", r"\d", "All Matches", True, False, False, 1) == ("1\n2",)
    assert RegexExtract().execute("a1", "[", "First Match", True, False, False, 1) == ("",)


def test_regex_replace_count_flags_and_groups():
    assert RegexReplace().execute("Aa aA", "a", "x") == ("xx xx",)  # case-insensitive by default
    assert RegexReplace().execute("Aa aA", "a", "x", case_insensitive=False, count=1) == ("Ax aA",)
    assert RegexReplace().execute("k=v", r"(\w)=(\w)", r"\2=\1") == ("v=k",)
    with pytest.raises(re.error):
        RegexReplace().execute("a", "(", "x")


def test_preview_any_text_for_each_kind_of_value():
    assert as_text("plain") == "plain"
    assert as_text(3) == "3" and as_text(0.5) == "0.5" and as_text(True) == "True"
    assert as_text(None) == "None"
    assert as_text({"a": [1, 2]}) == '{\n    "a": [\n        1,\n        2\n    ]\n}'
    assert as_text(torch.tensor([1.0])) == str(torch.tensor([1.0]))


def test_preview_any_is_an_output_node_with_ui_text():
    assert PreviewAny.OUTPUT_NODE is True and PreviewAny.RETURN_TYPES == ()
    assert PreviewAny().main(["x", 1]) == {"ui": {"text": ('[\n    "x",\n    1\n]',)}}
