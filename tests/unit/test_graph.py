"""Execution order: ComfyUI's pick among ready nodes."""

from comfyserve.engine.graph import ExecutionOrder, is_link

OUTPUT_TYPES = {"SaveImage", "PreviewImage"}


def run_order(prompt, outputs, cached=()):
    order = ExecutionOrder(
        prompt, lambda n: n in cached, lambda n: prompt[n]["class_type"] in OUTPUT_TYPES
    )
    for node in outputs:
        order.add_output(node)
    ran = []
    while not order.is_empty():
        node = order.next_node()
        assert node is not None
        ran.append(node)
        order.complete(node)
    return ran


TINY = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0]}},
    "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
}


def test_order_matches_comfyui_transcript():
    # ws_runs_tiny.json: executing 1, 4, 2, 3 — the preview runs as soon as its input is ready.
    assert run_order(TINY, ["3", "4"]) == ["1", "4", "2", "3"]


def test_cached_inputs_are_not_scheduled():
    # Fully cached: only the output nodes are staged, in the order they were requested.
    assert run_order(TINY, ["3", "4"], cached={"1", "2", "3", "4"}) == ["3", "4"]
    assert run_order(TINY, ["3", "4"], cached={"1", "2", "4"}) == ["3", "4"]


def test_unrequested_outputs_do_not_run():
    assert run_order(TINY, ["4"]) == ["1", "4"]


def test_cycle_leaves_nothing_ready():
    prompt = {
        "1": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0]}},
    }
    order = ExecutionOrder(prompt, lambda n: False, lambda n: prompt[n]["class_type"] in OUTPUT_TYPES)
    order.add_output("3")
    assert order.next_node() is None


def test_is_link():
    assert is_link(["1", 0])
    assert not is_link(["1", "0"])
    assert not is_link(["1", True])
    assert not is_link([1])
    assert not is_link("1")
