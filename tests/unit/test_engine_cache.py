"""Signature keys of literal inputs: equal values share a key, different types never do."""

import math

from comfyserve.engine.cache import _literal_key


def test_scalar_keys_keep_types_apart():
    values = [1, 1.0, True, "1", None, "None", [1], {"a": 1}, "int:1"]
    keys = [_literal_key(v) for v in values]
    assert len(set(keys)) == len(values)


def test_equal_values_share_a_key_nan_included():
    assert _literal_key(0.5) == _literal_key(1 / 2)
    assert _literal_key(math.nan) == _literal_key(float("nan"))
    assert _literal_key({"b": 1, "a": [2]}) == _literal_key({"a": [2], "b": 1})
    assert _literal_key("text") != _literal_key("text ")
