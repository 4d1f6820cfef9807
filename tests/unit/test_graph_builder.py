"""GraphBuilder: expansion graphs with per-builder id prefixes, as ComfyUI's graph_utils builds them."""

from __future__ import annotations

import contextvars

from comfyserve.engine.graph_builder import GraphBuilder, Node, add_graph_prefix, is_link


def in_fresh_context(function):
    """Run `function` in a copy of an empty context (the default prefix is per context)."""
    return contextvars.Context().run(function)


def test_nodes_links_and_finalize():
    def build():
        graph = GraphBuilder()
        image = graph.node("EmptyImage", width=8, height=8)
        inverted = graph.node("ImageInvert", image=image.out(0))
        return graph.prefix, image, inverted, graph.finalize()

    prefix, image, inverted, finalized = in_fresh_context(build)
    assert prefix == ".0.0."
    assert image.id == ".0.0.1" and inverted.id == ".0.0.2"
    assert finalized == {
        ".0.0.1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8}},
        ".0.0.2": {"class_type": "ImageInvert", "inputs": {"image": [".0.0.1", 0]}},
    }


def test_prefixes_follow_the_executors_default_and_count_builders():
    def build():
        GraphBuilder.set_default_prefix("12", 3)
        first, second = GraphBuilder(), GraphBuilder()
        explicit = GraphBuilder(prefix="mine.")
        GraphBuilder.set_default_prefix("12", 4)
        third = GraphBuilder()
        return first.prefix, second.prefix, explicit.prefix, third.prefix, GraphBuilder.alloc_prefix(root="x", graph_index=9)

    assert in_fresh_context(build) == ("12.3.0.", "12.3.1.", "mine.", "12.4.0.", "x.4.9.")


def test_node_ids_lookup_and_reuse():
    graph = GraphBuilder(prefix="p.")
    named = graph.node("A", id="load", x=1)
    assert graph.node("B", id="load") is named  # same id: the existing node
    assert graph.lookup_node("load") is named
    assert graph.lookup_node("missing") is None
    numbered = graph.node("C")
    assert numbered.id == "p.1"
    graph.remove_node("1")
    assert list(graph.finalize()) == ["p.load"]


def test_node_inputs_and_display_override():
    node = Node("n", "KSampler", {"seed": 1})
    node.set_input("steps", 20)
    node.set_input("seed", None)
    assert node.get_input("steps") == 20 and node.get_input("seed") is None
    assert node.serialize() == {"class_type": "KSampler", "inputs": {"steps": 20}}
    node.set_override_display_id("5")
    assert node.serialize()["override_display_id"] == "5"


def test_replace_node_output():
    graph = GraphBuilder(prefix="g.")
    source = graph.node("Source")
    sink = graph.node("Sink", a=source.out(0), b=source.out(1), c="literal")
    graph.replace_node_output("1", 0, ["other", 2])
    assert sink.inputs == {"a": ["other", 2], "b": ["g.1", 1], "c": "literal"}
    graph.replace_node_output("1", 1, None)
    assert sink.inputs == {"a": ["other", 2], "c": "literal"}


def test_is_link_and_add_graph_prefix():
    assert is_link(["3", 0]) and is_link(["3", 1.0])
    assert not is_link([3, 0]) and not is_link(["3"]) and not is_link(("3", 0)) and not is_link(["3", "0"])
    graph = {"1": {"class_type": "A", "inputs": {"x": 1}}, "2": {"class_type": "B", "inputs": {"a": ["1", 0]}}}
    prefixed, outputs = add_graph_prefix(graph, [["2", 0], 5], "pre.")
    assert prefixed == {
        "pre.1": {"class_type": "A", "inputs": {"x": 1}},
        "pre.2": {"class_type": "B", "inputs": {"a": ["pre.1", 0]}},
    }
    assert outputs == (["pre.2", 0], 5)
