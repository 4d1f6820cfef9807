"""Informational routes and `/internal/*`, held to ComfyUI's captures (routes_basic.json)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.api.client import Reply, WsClient, get, request
from tests.conftest import reference

BASIC = reference("routes_basic.json")

# Reference records whose status, content type and body kind we match as captured.
SAME_AS_REFERENCE = [
    name
    for name in BASIC
    if re.match(
        r"GET (/api)?/(embeddings/?|models(/loras|/checkpoints|/not_a_folder)?|extensions|system_stats|features|i18n"
        r"|workflow_templates|global_subgraphs|experiment/models(/checkpoints|/not_a_folder)?|object_info/NoSuchNode)$",
        name,
    )
] + [
    "GET /internal/logs",
    "GET /internal/logs/raw",
    "GET /internal/folder_paths",
    "GET /internal/files/input",
    "GET /internal/files/temp",
    "GET /internal/files/models",
    "GET /internal/nope",
    "GET /api/internal/logs",
    "POST /system_stats",
    "HEAD /system_stats",
]


def ref_response(name: str) -> dict:
    return BASIC[name]["response"]


def with_base(value, base: Path):
    """A reference body with its `<BASE>` placeholder replaced by this server's base directory."""
    return json.loads(json.dumps(value).replace("<BASE>", str(base.resolve())))


def fetch(server, name: str) -> Reply:
    req = BASIC[name]["request"]
    return request(server.url, req["method"], req["path"])


def test_reference_list_has_each_route_with_its_api_twin():
    plain = [n for n in SAME_AS_REFERENCE if n.startswith("GET /") and not n.startswith(("GET /api/", "GET /internal"))]
    assert len(plain) == 16
    assert all(n.replace("GET /", "GET /api/", 1) in SAME_AS_REFERENCE for n in plain)


@pytest.mark.parametrize("name", SAME_AS_REFERENCE)
def test_status_content_type_and_body_kind_match(server, name):
    reply = fetch(server, name)
    expected = ref_response(name)
    assert reply.status == expected["status"]
    assert reply.headers.get("Content-Type") == expected["headers"].get("Content-Type")
    body = expected["body"]
    if body["kind"] == "json":
        assert type(reply.json()) is type(body["json"])
    elif body["kind"] == "empty":
        assert reply.body == b""
    else:
        assert reply.body.decode() == body["text"]


def test_system_stats_fields_and_real_values(server):
    stats = get(server.url, "/system_stats").json()
    expected = ref_response("GET /system_stats")["body"]["json"]
    assert stats.keys() == expected.keys()
    system = stats["system"]
    assert system.keys() == expected["system"].keys()
    for key in ("os", "ram_total", "ram_free", "comfyui_version", "required_frontend_version",
                "required_templates_version", "python_version", "pytorch_version", "embedded_python", "argv"):
        assert type(system[key]) is type(expected["system"][key]), key
    assert system["comfyui_version"] == "0.8.0"
    assert system["required_frontend_version"] == expected["system"]["required_frontend_version"]
    assert 0 < system["ram_free"] <= system["ram_total"]
    assert "--base-directory" in system["argv"] and "--cpu" in system["argv"]
    [device] = stats["devices"]
    assert device.keys() == expected["devices"][0].keys()
    assert (device["name"], device["type"], device["index"]) == ("cpu", "cpu", None)  # started with --cpu
    assert device["vram_total"] == system["ram_total"]
    assert get(server.url, "/api/system_stats").json()["system"]["ram_total"] == system["ram_total"]


@pytest.mark.parametrize("path", ["/features", "/api/features"])
def test_features_equal_reference(server, path):
    assert get(server.url, path).json() == ref_response("GET /features")["body"]["json"]


@pytest.mark.parametrize("path", ["/models", "/api/models"])
def test_model_folder_names_equal_reference(server, path):
    assert get(server.url, path).json() == ref_response("GET /models")["body"]["json"]


def test_folder_paths_equal_reference(server):
    expected = with_base(ref_response("GET /internal/folder_paths")["body"]["json"], server.base)
    assert get(server.url, "/internal/folder_paths").json() == expected


@pytest.mark.parametrize("path", ["/experiment/models", "/api/experiment/models"])
def test_experiment_model_folders_equal_reference(server, path):
    expected = with_base(ref_response("GET /experiment/models")["body"]["json"], server.base)
    assert get(server.url, path).json() == expected


def test_object_info_unknown_node_is_empty(server):
    assert get(server.url, "/object_info/NoSuchNode").json() == {}
    assert get(server.url, "/api/object_info/NoSuchNode").json() == {}


def test_object_info_full_and_single_node_agree(server):
    full = get(server.url, "/object_info")
    assert full.status == 200 and full.headers["Content-Type"] == "application/json; charset=utf-8"
    everything = full.json()
    single = get(server.url, "/api/object_info/SaveImage").json()
    assert single == {"SaveImage": everything["SaveImage"]}
    expected = ref_response("GET /object_info/SaveImage")["body"]["json"]["SaveImage"]
    assert single["SaveImage"].keys() == expected.keys()
    assert get(server.url, "/api/object_info").json() == everything


def test_new_model_files_show_up_in_listings(server):
    checkpoints = server.base / "models" / "checkpoints"
    assert get(server.url, "/models/checkpoints").json() == []
    before = get(server.url, "/object_info").json()
    (checkpoints / "tiny.safetensors").write_bytes(b"x" * 10)
    (checkpoints / "sub").mkdir()
    (checkpoints / "sub" / "deep.ckpt").write_bytes(b"y")
    (checkpoints / "readme.txt").write_text("not a model")
    saved = server.base / "output" / "checkpoints"
    saved.mkdir(parents=True)
    (saved / "merged.safetensors").write_bytes(b"z" * 3)

    assert get(server.url, "/models/checkpoints").json() == ["merged.safetensors", "sub/deep.ckpt", "tiny.safetensors"]
    details = {d["name"]: d for d in get(server.url, "/api/experiment/models/checkpoints").json()}
    assert details.keys() == {"tiny.safetensors", "sub/deep.ckpt", "merged.safetensors"}
    ref = ref_response("GET /experiment/models/checkpoints")["body"]["json"][0]
    for entry in details.values():
        assert entry.keys() == ref.keys()
        assert all(type(entry[k]) is type(ref[k]) for k in ("name", "pathIndex", "size"))
        assert isinstance(entry["modified"], float) and isinstance(entry["created"], float)
    assert (details["tiny.safetensors"]["pathIndex"], details["tiny.safetensors"]["size"]) == (0, 10)
    assert (details["merged.safetensors"]["pathIndex"], details["merged.safetensors"]["size"]) == (1, 3)
    assert get(server.url, "/object_info").json().keys() == before.keys()


def test_embeddings_are_names_without_extension(server):
    folder = server.base / "models" / "embeddings"
    (folder / "style.pt").write_bytes(b"e")
    (folder / "people").mkdir()
    (folder / "people" / "face.safetensors").write_bytes(b"e")
    assert get(server.url, "/embeddings").json() == ["people/face", "style"]
    assert get(server.url, "/api/embeddings").json() == ["people/face", "style"]


def test_internal_files_newest_first_without_folders(server):
    folder = server.base / "input"
    for age, name in enumerate(["new.png", "mid.txt", "old.jpg"]):
        path = folder / name
        path.write_bytes(b"1")
        os.utime(path, (1_700_000_000 - age * 100, 1_700_000_000 - age * 100))
    (folder / "a_subfolder").mkdir()
    assert get(server.url, "/internal/files/input").json() == ["new.png", "mid.txt", "old.jpg"]


def test_internal_files_of_a_missing_folder_is_empty(server):
    temp = server.base / "temp"
    temp.rmdir()  # ComfyUI answers 500 here
    try:
        reply = get(server.url, "/internal/files/temp")
        assert (reply.status, reply.json()) == (200, [])
    finally:
        temp.mkdir()


def test_internal_is_not_under_api(server):
    for path in ("/api/internal/logs", "/api/internal/folder_paths", "/api/internal/files/input"):
        reply = get(server.url, path)
        assert (reply.status, reply.body, reply.headers["Content-Type"]) == (404, b"", "application/octet-stream")
    reply = request(server.url, "DELETE", "/internal/whatever")
    assert (reply.status, reply.body) == (404, b"404: Not Found")


def provoke_warning(server) -> None:
    """A cross-origin request: refused, and logged as a warning naming the origin."""
    reply = get(server.url, "/system_stats", headers={"Origin": "http://evil.example.com"})
    assert reply.status == 403


def test_logs_keep_recent_lines(server):
    provoke_warning(server)
    raw = get(server.url, "/internal/logs/raw").json()
    assert raw.keys() == {"entries", "size"}
    assert raw["size"].keys() == {"cols", "rows"}
    assert any("evil.example.com" in e["m"] for e in raw["entries"])
    for entry in raw["entries"]:
        assert entry.keys() == {"t", "m"} and entry["m"].endswith("\n")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?", entry["t"])
    text = get(server.url, "/internal/logs").json()
    assert text.startswith("".join(f"{e['t']} - {e['m']}" for e in raw["entries"][:1]))
    assert "evil.example.com" in text


def test_subscribed_websocket_gets_new_log_lines(server):
    ws = WsClient(server.ws_url, "log-watcher")
    try:
        ws.recv()  # status
        reply = request(server.url, "PATCH", "/internal/logs/subscribe", {"clientId": "log-watcher", "enabled": True})
        assert (reply.status, reply.body) == (200, b"")
        provoke_warning(server)
        [*_, message] = ws.until(lambda f: isinstance(f, dict) and f["type"] == "logs"
                                 and any("evil.example.com" in e["m"] for e in f["data"]["entries"]))
        assert message["data"]["size"].keys() == {"cols", "rows"}
    finally:
        ws.close()
    off = request(server.url, "PATCH", "/internal/logs/subscribe", {"clientId": "log-watcher", "enabled": False})
    assert off.status == 200


@pytest.mark.parametrize("body", [b"not json", b'{"clientId": "x"}', b'{"enabled": true}', b"[]"])
def test_bad_subscription_bodies_are_400(server, body):
    reply = request(server.url, "PATCH", "/internal/logs/subscribe", raw=body)
    assert reply.status == 400
    assert reply.json()["error"].keys() == {"type", "message", "details", "extra_info"}


def test_custom_node_assets(server):
    pack = server.base / "custom_nodes" / "assets_pack"
    (pack / "example_workflows").mkdir(parents=True)
    (pack / "example_workflows" / "demo.json").write_text('{"nodes": []}')
    (pack / "locales" / "en").mkdir(parents=True)
    (pack / "locales" / "en" / "main.json").write_text('{"nodeDefs": {"X": {"display_name": "Ex"}}}')
    (pack / "subgraphs").mkdir()
    (pack / "subgraphs" / "blur.json").write_text('{"definitions": {}}')

    assert get(server.url, "/workflow_templates").json() == {"assets_pack": ["demo"]}
    demo = get(server.url, "/api/workflow_templates/assets_pack/demo.json")
    assert (demo.status, demo.json()) == (200, {"nodes": []})
    assert get(server.url, "/api/workflow_templates/assets_pack/..%2Flocales%2Fen%2Fmain.json").status == 404
    assert get(server.url, "/i18n").json() == {"en": {"nodeDefs": {"X": {"display_name": "Ex"}}}}
    listing = get(server.url, "/api/global_subgraphs").json()
    [(subgraph_id, entry)] = listing.items()
    assert entry == {"source": "custom_node", "name": "blur", "info": {"node_pack": "custom_nodes.assets_pack"}}
    one = get(server.url, f"/global_subgraphs/{subgraph_id}").json()
    assert one["data"] == '{"definitions": {}}'
    assert get(server.url, "/global_subgraphs/unknown").json() is None
