"""How the registry describes a node class in `/object_info`: ComfyUI's V1 rules and the v3 shape."""

from __future__ import annotations

from comfyserve.engine.registry import NodeRegistry


class Plain:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "image"


def describe(cls: type, display_name: str | None = "Shown") -> dict:
    registry = NodeRegistry()
    registry.register_mappings({"Node": cls}, {"Node": display_name}, python_module="nodes")
    return registry.node_info("Node")


def test_a_plain_v1_class_gets_no_optional_keys():
    info = describe(Plain)
    assert info["python_module"] == "nodes"
    assert not {"output_tooltips", "output_matchtypes", "deprecated", "experimental", "api_node"} & set(info)


def test_the_class_own_relative_python_module_wins_but_is_not_inherited():
    extra = type("Extra", (Plain,), {"RELATIVE_PYTHON_MODULE": "comfy_extras.nodes_example"})
    assert describe(extra)["python_module"] == "comfy_extras.nodes_example"
    assert describe(type("Sub", (extra,), {}))["python_module"] == "nodes"


def test_api_node_is_listed_whenever_the_class_defines_it():
    assert describe(type("Off", (Plain,), {"API_NODE": False}))["api_node"] is False
    assert describe(type("On", (Plain,), {"API_NODE": True}))["api_node"] is True


def test_v3_schema_classes_list_every_v3_key_false_and_null_included():
    v3 = type("V3", (Plain,), {"V3_SCHEMA": True, "RETURN_TYPES": ("IMAGE", "MASK")})
    info = describe(v3, display_name=None)
    assert info["display_name"] is None
    assert info["output_tooltips"] == [None, None]
    assert info["output_matchtypes"] is None
    assert (info["deprecated"], info["experimental"], info["api_node"]) == (False, False, False)
    flagged = describe(type("V3Old", (v3,), {"DEPRECATED": True, "OUTPUT_TOOLTIPS": ("a", "b")}))
    assert flagged["deprecated"] is True and flagged["output_tooltips"] == ["a", "b"]
