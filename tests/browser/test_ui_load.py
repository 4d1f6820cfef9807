"""The real ComfyUI web UI opens on comfyserve: both recorded builds, on a fresh user directory,
with no failed request and no console error the server caused; the node library shows our
nodes, categories and tooltips; the UI works under a sub-path behind a reverse proxy."""

from __future__ import annotations

import json
import urllib.request
from urllib.parse import urlsplit

import pytest

from tests.browser.frontends import OLD, VERSIONS
from tests.browser.proxy import SubPathProxy
from tests.serverproc import REPO

REQUESTS = json.loads((REPO.parent / "shared" / "reference" / "frontend" / "requests.json").read_text())
# The routes without which the UI does not start or run (requests.json, "breaks").
VITAL = {("GET", "/api/object_info"), ("GET", "/api/settings"), ("GET", "/api/users"), ("GET", "/api/extensions")}
TINY = [
    {"id": 1, "type": "EmptyImage", "widgets": {"width": 24, "height": 16, "color": 0x102030}},
    {"id": 2, "type": "ImageInvert", "links": {"image": [1, 0]}},
    {"id": 3, "type": "SaveImage", "widgets": {"filename_prefix": "tiny"}, "links": {"images": [2, 0]}},
]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3])


@pytest.mark.parametrize("frontend", VERSIONS)
def test_first_start_has_no_failed_request_and_no_console_error(start_server, open_ui, frontend):
    server = start_server(frontend, first_start=True)
    ui = open_ui(server.url).open(first_start=True)

    version = ui.version()
    if frontend == OLD:
        assert version == OLD
    else:
        assert version_tuple(version) >= (1, 58)
    # The websocket handshake: the UI took the sid of our first `status` message as its clientId.
    client_id = ui.js("() => window.app.api.clientId")
    assert client_id and ui.js("() => sessionStorage.getItem('clientId')") == client_id
    # Closing the templates browser is remembered, as on ComfyUI.
    ui.wait_for_answers([("POST", "/api/settings/Comfy.TutorialCompleted")])
    settings_file = server.base / "user" / "default" / "comfy.settings.json"
    assert json.loads(settings_file.read_text())["Comfy.TutorialCompleted"] is True
    # The recorded session's routes, the late ones too (the queue or jobs, the models the
    # templates browser asks for, the templates' index), each once answered.
    recorded_run = "1.35.9/first_start_model_free" if frontend == OLD else "1.58.1/first_start_model_free_strict"
    recorded = [(entry["method"], entry["path"]) for entry in REQUESTS["runs"][recorded_run]["phases"]["load"]
                if entry["path"].startswith("/api/") and "/settings/" not in entry["path"]]
    ui.wait_for_answers([*recorded, ("GET", "/templates/index.json")])

    assert [str(p) for p in ui.recorder.server_problems()] == []
    answered = {(method, path.split("?")[0]): status for method, path, status in ui.recorder.api_requests}
    for route in VITAL:
        assert answered.get(route) == 200, route
    # The recorded session's other routes were asked and answered too (ComfyUI's 404s allowed).
    for entry in REQUESTS["runs"][recorded_run]["phases"]["load"]:
        route = (entry["method"], entry["path"])
        if entry["path"].startswith("/api/") and "/settings/" not in entry["path"]:
            assert route in answered, f"the UI never asked {route} (recorded with ComfyUI)"
            assert answered[route] < 400 or answered[route] in entry["status"], (route, answered[route])


@pytest.mark.parametrize("frontend", VERSIONS)
def test_node_library_lists_our_nodes_with_categories_and_tooltips(start_server, open_ui, frontend):
    server = start_server(frontend)
    info = get_json(server.url + "/api/object_info")
    ui = open_ui(server.url).open()

    library = ui.markup.sidebar_tab("node-library")
    library.click()
    ui.page.locator("[role=treeitem]").first.wait_for()
    top = set(ui.markup.library_labels(1))
    ours = {n["category"].split("/")[0] for n in info.values() if not n["category"].startswith("api node")}
    assert ours <= top, f"categories missing from the node library: {sorted(ours - top)}"

    ui.markup.library_entry("image", 1).click()
    save_image = ui.markup.library_entry(info["SaveImage"]["display_name"], 2)
    save_image.wait_for()
    shown = set(ui.markup.library_labels(2))
    # (The UI hides deprecated nodes, and shows V3 nodes without a display name, as in ComfyUI,
    # under a name it makes up.)
    in_image = {n["display_name"] for n in info.values()
                if n["category"] == "image" and n["display_name"] and not n.get("deprecated")}
    assert in_image and in_image <= shown, sorted(in_image - shown)

    # Hovering a node shows its preview with our description.
    save_image.hover()
    ui.page.get_by_text(info["SaveImage"]["description"]).first.wait_for(timeout=10_000)

    # On the canvas, hovering an input shows its tooltip from /object_info.
    library.click()  # close the sidebar
    ui.load_graph(ui.build_graph([{"id": 1, "type": "SaveImage", "pos": [400, 200]}]))
    x, y = ui.input_slot_point(1, 0)
    ui.page.mouse.move(x + 40, y + 5)
    ui.page.mouse.move(x + 10, y)
    tooltip = info["SaveImage"]["input"]["required"]["images"][1]["tooltip"]
    ui.page.locator(".node-tooltip", has_text=tooltip).wait_for(timeout=10_000)
    assert ui.recorder.server_problems() == []


@pytest.mark.parametrize("frontend", VERSIONS)
def test_ui_under_a_sub_path_behind_a_reverse_proxy(start_server, open_ui, frontend):
    server = start_server(frontend)
    proxy = SubPathProxy(server.url).start()
    try:
        ui = open_ui(proxy.url).open()
        ui.load_graph(ui.build_graph(TINY))
        ui.run()
        image = ui.wait_for_output_image(3)
        assert (image["width"], image["height"]) == (24, 16)
        assert image["src"].startswith(proxy.url + "api/view?")
        asked = proxy.paths
        assert "/comfy/ws" in {p.split("?")[0] for p in asked}
        assert any(p.startswith("/comfy/api/object_info") for p in asked)
        assert any(p.startswith("/comfy/assets/") for p in asked)
        assert [str(p) for p in ui.recorder.server_problems()] == []
        # What the UI asks for without its base path (a bug of the UI, which no server can fix).
        outside = {urlsplit(u).path for u in ui.recorder.outside}
        assert all(ui.markup.outside_base_ok(p) for p in outside), outside
        ui.close()
    finally:
        proxy.stop()
