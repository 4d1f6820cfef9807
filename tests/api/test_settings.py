"""Black-box tests of `/settings` and `/users` (single-user mode) against a real server.

The settings and users records of routes_basic.json are replayed once, in capture order,
before the other tests of this module run; they share one fresh server.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.api.client import Reply, call, send_record
from tests.conftest import reference
from tests.serverproc import REFERENCE, ServerProcess

ROUTES = reference("routes_basic.json")
RECORDS = {
    name: record
    for name, record in ROUTES.items()
    if re.match(r"^(GET|POST) (/api)?/(settings|users)\b", name)
}
# ComfyUI answers these with a bare 500; we answer 400 with a readable reason instead.
BAD_JSON_RECORDS = {"POST /settings/{id} non-json", "POST /settings non-json"}
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
JSON_TYPE = "application/json; charset=utf-8"




@pytest.fixture(scope="module", autouse=True)
def replayed(server: ServerProcess) -> dict[str, Reply]:
    """The settings/users requests of routes_basic.json, sent in capture order to a fresh server."""
    return {name: send_record(server.url, record) for name, record in RECORDS.items()}


def settings_file(server: ServerProcess) -> Path:
    return server.base / "user" / "default" / "comfy.settings.json"


def test_the_capture_has_the_records_this_module_replays() -> None:
    assert len(RECORDS) == 16
    assert BAD_JSON_RECORDS <= set(RECORDS)


@pytest.mark.parametrize("name", [n for n in RECORDS if n not in BAD_JSON_RECORDS])
def test_replay_matches_comfyui(replayed: dict[str, Reply], name: str) -> None:
    expected = RECORDS[name]["response"]
    reply = replayed[name]
    assert reply.status == expected["status"]
    assert reply.content_type == expected["headers"].get("Content-Type")
    body = expected["body"]
    if body["kind"] == "empty":
        assert reply.body == b""
    elif name == "POST /users (single-user mode)":
        assert re.fullmatch(rf"alice_{UUID}", body["json"])  # ComfyUI's id shape
        assert re.fullmatch(rf"alice_{UUID}", reply.json())
    else:
        assert reply.json() == body["json"]


@pytest.mark.parametrize("name", sorted(BAD_JSON_RECORDS))
def test_bad_json_is_400_with_a_reason(replayed: dict[str, Reply], name: str) -> None:
    reply = replayed[name]
    assert reply.status == 400
    assert reply.content_type == JSON_TYPE
    error = reply.json()["error"]
    assert error["type"] == "invalid_json"
    assert "not valid JSON" in error["details"]


def test_files_on_disk_after_replay(server: ServerProcess, replayed: dict[str, Reply]) -> None:
    written = json.loads(settings_file(server).read_text())
    assert written == RECORDS["GET /settings after bulk"]["response"]["body"]["json"]
    alice = replayed["POST /users (single-user mode)"].json()
    users = json.loads((server.base / "user" / "users.json").read_text())
    assert users == {"default": "default", alice: "alice"}


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        ("/settings", b"[1, 2]", "must be a JSON object"),
        ("/settings", b"null", "empty"),
        ("/settings", b"", "empty"),
        ("/settings", b"\xff\xfe", "not valid JSON"),
        ("/settings/Some.Id", b"", "empty"),
        ("/settings/Some.Id", b"{'single': 'quotes'}", "not valid JSON"),
        ("/api/settings/Some.Id", b"undefined", "not valid JSON"),
    ],
)
def test_bad_settings_bodies_change_nothing(
    server: ServerProcess, path: str, body: bytes, reason: str
) -> None:
    before = settings_file(server).read_bytes()
    reply = call(server.url, "POST", path, body)
    assert reply.status == 400
    assert reason in reply.json()["error"]["details"]
    assert settings_file(server).read_bytes() == before


def test_any_json_value_can_be_a_setting(server: ServerProcess) -> None:
    values = {"V.Null": None, "V.Int": 3, "V.List": [1, "a"], "V.Str": "ü", "V.Bool": False}
    for key, value in values.items():
        reply = call(server.url, "POST", f"/api/settings/{key}", json.dumps(value).encode())
        assert (reply.status, reply.body) == (200, b"")
        assert call(server.url, "GET", f"/settings/{key}").json() == value
    written = json.loads(settings_file(server).read_text())
    assert {k: written[k] for k in values} == values  # null is stored, not dropped


def test_bulk_post_merges_and_overrides(server: ServerProcess) -> None:
    call(server.url, "POST", "/settings", b'{"M.A": 1, "M.B": 2}')
    call(server.url, "POST", "/settings", b'{"M.B": 3, "M.C": 4}')
    settings = call(server.url, "GET", "/settings").json()
    assert {k: settings[k] for k in ("M.A", "M.B", "M.C")} == {"M.A": 1, "M.B": 3, "M.C": 4}
    assert settings["Test.Setting"] == {"a": 1}  # earlier keys kept


def test_concurrent_posts_lose_nothing(server: ServerProcess) -> None:
    keys = [f"Race.K{i}" for i in range(24)]

    def post(key: str) -> int:
        return call(server.url, "POST", f"/api/settings/{key}", json.dumps(key).encode()).status

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(post, keys)) == {200}
    settings = call(server.url, "GET", "/api/settings").json()
    assert {k: settings.get(k) for k in keys} == {k: k for k in keys}
    assert [p.name for p in settings_file(server).parent.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b"{}", "username not provided"),
        (b'{"username": 5}', "username not provided"),
        (b'{"username": "   "}', "username not provided"),
        (b'{"username": "__system"}', "System User prefix not allowed"),
        (b'{"username": "alice"}', "Duplicate username."),
    ],
)
def test_bad_user_registrations_are_400(server: ServerProcess, body: bytes, error: str) -> None:
    reply = call(server.url, "POST", "/users", body)
    assert reply.status == 400
    assert reply.content_type == JSON_TYPE
    assert error in reply.json()["error"]


def _frontend_calls() -> list[dict]:
    """The frontend's start-up requests to these routes (first start, frontend 1.35.9)."""
    runs = json.loads((REFERENCE.parent / "frontend" / "requests.json").read_text())["runs"]
    load = runs["1.35.9/first_start_model_free"]["phases"]["load"]
    return [r for r in load if re.match(r"^/api/(users|settings|userdata)", r["path"])]


QUERY_VALUES = {"dir": "workflows", "recurse": "true", "split": "false", "full_info": "true"}


@pytest.mark.parametrize("seen", _frontend_calls(), ids=lambda r: f"{r['method']} {r['path']}")
def test_frontend_start_up_requests(server: ServerProcess, seen: dict) -> None:
    query = "&".join(f"{k}={QUERY_VALUES[k]}" for k in seen["query_keys"])
    path = seen["path"] + (f"?{query}" if query else "")
    reply = call(server.url, seen["method"], path, b"true" if seen["method"] == "POST" else None)
    assert [reply.status] == seen["status"]
    expected_type = seen["content_type"][0] if seen["content_type"] else None
    assert (reply.content_type.split(";")[0] if reply.content_type else None) == expected_type


def test_corrupt_settings_file_reads_as_empty(server: ServerProcess) -> None:
    settings_file(server).write_text("{ this is not json")
    assert call(server.url, "GET", "/settings").json() == {}
    assert call(server.url, "GET", "/settings/Test.Setting").status == 200
    assert call(server.url, "POST", "/settings/Fixed.Now", b"1").status == 200
    assert json.loads(settings_file(server).read_text()) == {"Fixed.Now": 1}
