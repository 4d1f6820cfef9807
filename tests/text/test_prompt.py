"""ComfyUI's prompt weight syntax: expectations worked out by hand from the rules
((x) ×1.1 per group, (x:w) sets w, escapes are literal, unbalanced parentheses stay text)."""

from __future__ import annotations

import pytest

from comfyserve.text.prompt import split_top_level, weighted_segments


def approx(pairs):
    return [(text, pytest.approx(weight)) for text, weight in pairs]


@pytest.mark.parametrize("text, expected", [
    ("a photo of a cat", [("a photo of a cat", 1.0)]),
    ("a (red) cat", [("a ", 1.0), ("red", 1.1), (" cat", 1.0)]),
    ("a (red:1.5) cat", [("a ", 1.0), ("red", 1.5), (" cat", 1.0)]),
    ("((red))", [("red", 1.1 * 1.1)]),
    ("(((red)))", [("red", 1.1 ** 3)]),
    ("((red):1.3)", [("red", 1.3 * 1.1)]),       # the outer number replaces only the outer 1.1
    ("((red:1.3))", [("red", 1.3)]),              # an inner number wins over outer groups
    ("(red:0)", [("red", 0.0)]),
    ("((red:1.0):0.0)", [("red", 1.0)]),
    ("(a (b:2) c:3)", [("a ", 3.0), ("b", 2.0), (" c", 3.0)]),
    ("x ((((a (b:6) c:10)))) y", [("x ", 1.0), ("a ", 10.0), ("b", 6.0), (" c", 10.0), (" y", 1.0)]),
    ("x ((((a (b:6) c):10))) y", [("x ", 1.0), ("a ", 10 * 1.1), ("b", 6.0), (" c", 10 * 1.1), (" y", 1.0)]),
    ("(a)(b)", [("a", 1.1), ("b", 1.1)]),
    ("(a:b)", [("a:b", 1.1)]),                    # not a number: the colon is text
    ("(:1.5)", [(":1.5", 1.1)]),                  # a colon at the very start is text too
    ("(a:1:2)", [("a:1", 2.0)]),                  # the last colon counts
    ("(a: 1.5 )", [("a", 1.5)]),                  # float() accepts the spaces
    ("", []),
    ("()", []),                                   # an empty group yields nothing
])
def test_weights(text, expected):
    assert weighted_segments(text) == approx(expected)


def test_escaped_parentheses_are_literal_text():
    assert weighted_segments(r"a \(red\) cat") == [("a (red) cat", 1.0)]
    assert weighted_segments(r"(a \(b\):1.2) c") == approx([("a (b)", 1.2), (" c", 1.0)])
    assert weighted_segments(r"\((a)\)") == approx([("(", 1.0), ("a", 1.1), (")", 1.0)])


def test_unbalanced_parentheses_stay_text():
    assert split_top_level("a (b") == ["a ", "(b"]
    assert weighted_segments("a (b") == [("a ", 1.0), ("(b", 1.0)]
    assert weighted_segments("a) b") == [("a) b", 1.0)]


def test_disable_weights_keeps_the_whole_text():
    assert weighted_segments(r"a (b:2) \(c\)", disable_weights=True) == [("a (b:2) (c)", 1.0)]
