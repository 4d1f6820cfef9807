"""What the UI keeps on the server across reloads (saved workflows, settings), and driving the
queue from the UI: cancel the running job and clear the pending ones."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.browser.frontends import VERSIONS


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


@pytest.mark.parametrize("frontend", VERSIONS)
def test_save_a_workflow_reload_and_open_it_again(start_server, open_ui, frontend):
    server = start_server(frontend)
    ui = open_ui(server.url).open()
    ui.load_graph(ui.build_graph([
        {"id": 1, "type": "EmptyImage", "widgets": {"width": 48, "height": 40, "color": 0xABCDEF}},
        {"id": 2, "type": "ImageInvert", "links": {"image": [1, 0]}},
        {"id": 3, "type": "SaveImage", "widgets": {"filename_prefix": "kept"}, "links": {"images": [2, 0]}},
    ]))
    ui.page.locator("#graph-canvas").click(position={"x": 640, "y": 600})
    ui.page.keyboard.press("Control+s")  # asks for a name
    ui.page.locator("input:focus").wait_for()  # the name prompt's field
    ui.page.keyboard.press("Control+a")
    ui.page.keyboard.type("my flow")
    with ui.page.expect_response(lambda r: "/api/userdata/" in r.url and r.request.method == "POST") as saved:
        ui.page.keyboard.press("Enter")
    assert saved.value.status == 200
    assert saved.value.json()["path"] == "workflows/my flow.json"
    on_disk = json.loads((server.base / "user" / "default" / "workflows" / "my flow.json").read_text())
    assert sorted(n["type"] for n in on_disk["nodes"]) == ["EmptyImage", "ImageInvert", "SaveImage"]

    # Reloaded in a fresh browser (no local storage to restore tabs from): the workflow comes
    # from the server's list and file.
    ui = open_ui(server.url).open()
    assert ui.node_types() != ["EmptyImage", "ImageInvert", "SaveImage"]
    ui.markup.sidebar_tab("workflows").click()
    with ui.page.expect_response(lambda r: r.url.endswith("/api/userdata/workflows%2Fmy%20flow.json")) as fetched:
        ui.markup.workflow_entry("my flow").click()
    assert fetched.value.status == 200
    ui.page.wait_for_function("() => window.app.graph.nodes.some(n => n.type === 'EmptyImage')")
    assert ui.node_types() == ["EmptyImage", "ImageInvert", "SaveImage"]
    assert [ui.widget_value(1, w) for w in ("width", "height", "color")] == [48, 40, 0xABCDEF]
    assert ui.js("() => window.app.extensionManager.workflow.activeWorkflow.path") == "workflows/my flow.json"
    assert [str(p) for p in ui.recorder.server_problems()] == []


@pytest.mark.parametrize("frontend", VERSIONS)
def test_settings_survive_a_reload(start_server, open_ui, frontend):
    server = start_server(frontend)
    ui = open_ui(server.url).open()
    switch = ui.page.locator('[role=switch][aria-labelledby="Comfy.DevMode-label"]')
    ui.page.keyboard.press("Control+Comma")
    ui.page.get_by_placeholder("Search Settings...").fill("dev mode")
    assert switch.get_attribute("aria-checked") == "false"
    with ui.page.expect_response(lambda r: r.url.endswith("/api/settings/Comfy.DevMode")) as posted:
        switch.click()
    assert posted.value.status == 200
    assert json.loads(posted.value.request.post_data) is True
    settings_file = server.base / "user" / "default" / "comfy.settings.json"
    assert json.loads(settings_file.read_text())["Comfy.DevMode"] is True

    ui.reload()
    assert ui.js("() => window.app.extensionManager.setting.get('Comfy.DevMode')") is True
    ui.page.keyboard.press("Control+Comma")
    ui.page.get_by_placeholder("Search Settings...").fill("dev mode")
    assert switch.get_attribute("aria-checked") == "true"
    assert [str(p) for p in ui.recorder.server_problems()] == []


def countdown_graph() -> list[dict]:
    """A job that runs until it is interrupted: the test pack's countdown (10,000 steps of 10 ms,
    checking for an interrupt at each) feeding its report node. A job of real image work ends
    on its own at a speed that depends on the machine, and the cancel could come too late."""
    return [
        {"id": 1, "type": "CSCountdown", "widgets": {"steps": 10000, "delay": 0.01}},
        {"id": 2, "type": "CSReport", "links": {"count": [1, 0]}},
    ]


@pytest.mark.parametrize("frontend", VERSIONS)
def test_cancel_the_running_job_and_clear_the_queue(start_server, open_ui, frontend):
    # The same graph three times: no cache hits.
    server = start_server(frontend, "--cache-none", packs=("cs_test_pack",))
    ui = open_ui(server.url).open()
    ui.load_graph(ui.build_graph(countdown_graph()))
    prompt_ids = []
    for _ in range(3):
        with ui.page.expect_response(lambda r: r.url.endswith("/api/prompt") and r.request.method == "POST") as queued:
            ui.run()
        assert queued.value.status == 200
        prompt_ids.append(queued.value.json()["prompt_id"])
    running_id = prompt_ids[0]
    # The first one has started (its execution_start, to the UI's socket): 1 running, 2 pending.
    ui.wait_for_message(lambda m: m.get("type") == "execution_start" and m["data"]["prompt_id"] == running_id)
    queue = get_json(server.url + "/api/queue")
    assert [item[1] for item in queue["queue_running"]] == [running_id]
    assert sorted(item[1] for item in queue["queue_pending"]) == sorted(prompt_ids[1:])

    since = len(ui.messages)
    ui.page.get_by_role("button", name="Expand job queue").click()
    with ui.page.expect_response(lambda r: r.url.endswith("/api/queue") and r.request.method == "POST") as cleared:
        ui.page.get_by_role("button", name="Clear queued").click()
    assert cleared.value.status == 200 and json.loads(cleared.value.request.post_data) == {"clear": True}
    with ui.page.expect_response(lambda r: "/api/interrupt" in r.url) as interrupted:
        ui.page.get_by_role("button", name="Cancel current run").click()
    assert interrupted.value.status == 200

    # The interrupted job has ended: the server's status says that nothing remains.
    ui.wait_for_message(lambda m: m.get("type") == "status"
                        and m["data"]["status"]["exec_info"]["queue_remaining"] == 0, since=since)
    queue = get_json(server.url + "/api/queue")
    assert not queue["queue_running"] and not queue["queue_pending"], queue
    history = get_json(server.url + f"/api/history/{running_id}")[running_id]
    assert [m[0] for m in history["status"]["messages"]][-1] == "execution_interrupted"
    assert history["outputs"] == {}  # the report node never ran
    ui.markup.queue_idle().first.wait_for(timeout=10_000)
    assert ui.page.get_by_role("button", name="Cancel current run").is_disabled()
    assert [str(p) for p in ui.recorder.server_problems()] == []
