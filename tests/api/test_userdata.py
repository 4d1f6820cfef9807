"""Black-box tests of `/userdata`, `/v2/userdata` and per-user isolation against a real server.

The records of userdata.json form one sequence (each step sees the files the earlier ones
wrote), so they are replayed once, in order, before any other test of this module runs.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.client import Reply, call, send_record
from tests.conftest import reference
from tests.serverproc import ServerProcess

USERDATA = reference("userdata.json")
# The settings the capture had written before it ran (their file shows up in /v2/userdata).
CAPTURED_SETTINGS = USERDATA["GET /userdata/comfy.settings.json"]["response"]["body"]["json"]
TIME_KEYS = ("modified", "created")




def without_times(value: Any) -> Any:
    """The JSON with FileInfo times checked to be numbers and replaced by a marker."""
    if isinstance(value, list):
        return [without_times(v) for v in value]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in TIME_KEYS:
                assert isinstance(item, float), f"{key} must be float seconds, got {item!r}"
                item = "<time>"
            out[key] = without_times(item)
        return out
    return value


def assert_matches_reference(reply: Reply, expected: dict) -> None:
    """Status, Content-Type and body as ComfyUI answered."""
    assert reply.status == expected["status"]
    assert reply.content_type == expected["headers"].get("Content-Type")
    body = expected["body"]
    if body["kind"] == "empty":
        assert reply.body == b""
    elif body["kind"] == "text":
        assert reply.body.decode() == body["text"]
    elif body["kind"] == "json":
        assert without_times(reply.json()) == without_times(body["json"])
    else:
        assert len(reply.body) == body["length"]
        assert hashlib.sha256(reply.body).hexdigest() == body["sha256"]


@pytest.fixture(scope="module", autouse=True)
def replayed(server: ServerProcess) -> dict[str, Reply]:
    """Every userdata.json request, sent in capture order to a fresh server."""
    call(server.url, "POST", "/settings", json.dumps(CAPTURED_SETTINGS).encode())
    return {name: send_record(server.url, record) for name, record in USERDATA.items()}


def user_folder(server: ServerProcess, user: str = "default") -> Path:
    return server.base / "user" / user


@pytest.mark.parametrize("name", list(USERDATA))
def test_replay_matches_comfyui(replayed: dict[str, Reply], name: str) -> None:
    assert_matches_reference(replayed[name], USERDATA[name]["response"])


def test_served_files_are_never_sniffed(replayed: dict[str, Reply]) -> None:
    for name in ("GET /userdata/workflows%2Fa.json", "GET /userdata/workflows%2Fc.bin"):
        assert replayed[name].headers["x-content-type-options"] == "nosniff"
    assert "content-disposition" not in replayed["GET /userdata/workflows%2Fa.json"].headers


def test_files_on_disk_after_replay(server: ServerProcess) -> None:
    folder = user_folder(server)
    files = sorted(p.relative_to(folder).as_posix() for p in (folder / "workflows").rglob("*") if p.is_file())
    assert files == ["workflows/moved2.bin", "workflows/sub/b.json"]
    assert json.loads((folder / "comfy.settings.json").read_text()) == CAPTURED_SETTINGS
    assert (folder / "workflows" / "moved2.bin").read_bytes() == b"\x00\x01\x02"
    assert json.loads((folder / "workflows" / "sub" / "b.json").read_text()) == {"b": 2}
    # The traversal attempts wrote nothing outside the user's folder.
    assert not (server.base / "user" / "evil.json").exists()
    assert not (server.base / "escape.json").exists()
    assert not (server.base / "user" / "escape.json").exists()


# --- more than the capture: paths, links, odd targets ----------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/userdata/..%2F..%2Fsecret",
        "/userdata/..%252F..%252Fsecret",  # decoded twice, like ComfyUI
        "/userdata/%2Fetc%2Fpasswd",
        "/userdata/..%5C..%5Csecret",
        "/api/userdata/..%2Fusers.json",
    ],
)
def test_traversal_is_403_for_every_method(server: ServerProcess, path: str) -> None:
    for method, data in (("GET", None), ("POST", b"{}"), ("DELETE", None)):
        reply = call(server.url, method, path, data)
        assert (reply.status, reply.body) == (403, b""), (method, path)
    assert call(server.url, "POST", path + "/move/workflows%2Fx.json").status == 403
    assert not (server.base / "secret").exists()


@pytest.mark.parametrize("query", ["dir=..", "dir=%2Fetc", "dir=..%252F..", "dir=workflows%2F..%2F..%2F.."])
def test_listing_outside_the_user_folder_is_403(server: ServerProcess, query: str) -> None:
    reply = call(server.url, "GET", f"/userdata?{query}")
    assert (reply.status, reply.body) == (403, b"Invalid directory")


@pytest.mark.parametrize("path", ["..", "/etc", "workflows/../../.."])
def test_v2_listing_outside_the_user_folder_is_400(server: ServerProcess, path: str) -> None:
    reply = call(server.url, "GET", "/v2/userdata?path=" + urllib.request.quote(path))
    assert (reply.status, reply.body) == (400, b"Invalid path requested")


@pytest.fixture(scope="module")
def links(server: ServerProcess) -> Iterator[Path]:
    """A secret outside the user folder, reachable inside it only through symlinks."""
    secret = server.base / "secret.txt"
    secret.write_text("top secret")
    folder = user_folder(server) / "linked"
    folder.mkdir(parents=True)
    (folder / "leak.txt").symlink_to(secret)
    (folder / "outside").symlink_to(server.base)
    (folder / "inside.txt").write_text("fine")
    (folder / "alias.txt").symlink_to(folder / "inside.txt")
    yield secret


def test_symlinks_leading_out_are_refused(server: ServerProcess, links: Path) -> None:
    for path in ("/userdata/linked%2Fleak.txt", "/userdata/linked%2Foutside%2Fsecret.txt"):
        assert call(server.url, "GET", path).status == 403
        assert call(server.url, "POST", path, b"overwritten").status == 403
        assert call(server.url, "DELETE", path).status == 403
    assert call(server.url, "POST", "/userdata/linked%2Finside.txt/move/linked%2Fleak.txt").status == 403
    assert links.read_text() == "top secret"
    assert call(server.url, "GET", "/userdata?dir=linked&recurse=true").json() == ["alias.txt", "inside.txt"]
    v2 = call(server.url, "GET", "/v2/userdata?path=linked").json()
    assert [e["name"] for e in v2] == ["alias.txt", "inside.txt"]


def test_symlinks_inside_are_served_and_deleted_as_links(server: ServerProcess, links: Path) -> None:
    assert call(server.url, "GET", "/userdata/linked%2Falias.txt").body == b"fine"
    assert call(server.url, "DELETE", "/userdata/linked%2Falias.txt").status == 204
    folder = user_folder(server) / "linked"
    assert not os.path.lexists(folder / "alias.txt")
    assert (folder / "inside.txt").read_text() == "fine"


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("evil.html", "application/octet-stream"),
        ("evil.svg", "application/octet-stream"),
        ("evil.js", "application/octet-stream"),
        ("evil.xml", "application/octet-stream"),
        ("page.json", "application/json"),
        ("user.css", "text/css"),
        ("notes.txt", "text/plain"),
    ],
)
def test_files_are_served_safely(server: ServerProcess, name: str, content_type: str) -> None:
    payload = b"<script>alert(document.cookie)</script>"
    assert call(server.url, "POST", f"/userdata/safe%2F{name}", payload).status == 200
    reply = call(server.url, "GET", f"/api/userdata/safe%2F{name}")
    assert reply.status == 200
    assert reply.body == payload
    assert reply.content_type == content_type
    assert reply.headers["x-content-type-options"] == "nosniff"
    if content_type == "application/octet-stream":
        assert reply.headers["content-disposition"].startswith("attachment")
    else:
        assert "content-disposition" not in reply.headers


def test_post_writes_atomically_and_reports_full_info(server: ServerProcess) -> None:
    reply = call(server.url, "POST", "/userdata/atomic%2Fdoc.json?full_info=true", b'{"v": 1}')
    info = reply.json()
    assert info["path"] == "atomic/doc.json" and info["size"] == 8
    assert isinstance(info["modified"], float) and isinstance(info["created"], float)
    for i in range(5):
        assert call(server.url, "POST", "/userdata/atomic%2Fdoc.json", b'{"v": %d}' % i).status == 200
    folder = user_folder(server) / "atomic"
    assert os.listdir(folder) == ["doc.json"]  # no temp files left behind
    assert json.loads((folder / "doc.json").read_text()) == {"v": 4}


def test_overwrite_false_on_a_new_file_writes_it(server: ServerProcess) -> None:
    reply = call(server.url, "POST", "/userdata/fresh%2Fnew.json?overwrite=false", b"[]")
    assert (reply.status, reply.json()) == (200, "fresh/new.json")
    assert (user_folder(server) / "fresh" / "new.json").read_bytes() == b"[]"


def test_folders_where_files_are_expected_are_4xx(server: ServerProcess) -> None:
    call(server.url, "POST", "/userdata/odd%2Ffile.json", b"{}")
    call(server.url, "POST", "/userdata/odd%2Fdir%2Finner.json", b"{}")
    under_file = call(server.url, "POST", "/userdata/odd%2Ffile.json%2Fx.json", b"{}")
    assert under_file.status == 400 and b"odd/file.json/x.json" in under_file.body
    onto_dir = call(server.url, "POST", "/userdata/odd%2Fdir", b"{}")
    assert onto_dir.status == 400
    assert call(server.url, "GET", "/userdata/odd%2Fdir").status == 400
    assert call(server.url, "DELETE", "/userdata/odd%2Fdir").status == 400
    move = call(server.url, "POST", "/userdata/odd%2Ffile.json/move/odd%2Fdir")
    assert move.status == 400
    moved_under_file = call(
        server.url, "POST", "/userdata/odd%2Fdir%2Finner.json/move/odd%2Ffile.json%2Fy.json"
    )
    assert moved_under_file.status == 400
    assert (user_folder(server) / "odd" / "dir" / "inner.json").exists()
    assert (user_folder(server) / "odd" / "file.json").read_bytes() == b"{}"


def test_move_creates_folders_and_overwrites_by_default(server: ServerProcess) -> None:
    call(server.url, "POST", "/userdata/mv%2Fa.json", b"a")
    call(server.url, "POST", "/userdata/mv%2Fb.json", b"b")
    reply = call(server.url, "POST", "/userdata/mv%2Fa.json/move/mv%2Fdeep%2Fer%2Fa.json")
    assert reply.json() == "mv/deep/er/a.json"
    reply = call(server.url, "POST", "/userdata/mv%2Fb.json/move/mv%2Fdeep%2Fer%2Fa.json")
    assert reply.json() == "mv/deep/er/a.json"
    folder = user_folder(server) / "mv"
    assert (folder / "deep" / "er" / "a.json").read_bytes() == b"b"
    assert sorted(os.listdir(folder)) == ["deep"]


def test_listing_a_file_or_an_empty_dir(server: ServerProcess) -> None:
    call(server.url, "POST", "/userdata/lst%2Fonly.json", b"{}")
    (user_folder(server) / "lst" / "empty").mkdir()
    assert call(server.url, "GET", "/userdata?dir=lst%2Fempty").json() == []
    reply = call(server.url, "GET", "/userdata?dir=lst%2Fonly.json")
    assert (reply.status, reply.body) == (404, b"Directory not found")
    assert (
        call(server.url, "GET", "/userdata?dir=lst&full_info=true&split=true").json()[0]["path"]
        == "only.json"
    )


# --- multi-user and the upload limit -------------------------------------------------------

UPLOAD_LIMIT = 1024 * 1024  # --max-upload-size 1 (MB)


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A --multi-user server with a 1 MB upload limit."""
    proc = ServerProcess(tmp_path_factory.mktemp("multi"), args=["--multi-user", "--max-upload-size", "1"])
    proc.start()
    yield proc
    proc.stop()


def add_user(server: ServerProcess, name: str) -> str:
    reply = call(server.url, "POST", "/users", json.dumps({"username": name}).encode())
    assert reply.status == 200 and reply.content_type == "application/json; charset=utf-8"
    user_id = reply.json()
    assert re.fullmatch(rf"{name}_[0-9a-f-]{{36}}", user_id)
    return user_id


def test_multi_user_registry(multi: ServerProcess) -> None:
    before = call(multi.url, "GET", "/users").json()
    assert set(before) == {"storage", "users"} and before["storage"] == "server"
    assert "carol" not in before["users"].values()
    carol = add_user(multi, "carol")
    listed = call(multi.url, "GET", "/api/users").json()
    assert listed == {"storage": "server", "users": {**before["users"], carol: "carol"}}
    assert json.loads((multi.base / "user" / "users.json").read_text()) == listed["users"]
    duplicate = call(multi.url, "POST", "/users", json.dumps({"username": "carol"}).encode())
    assert (duplicate.status, duplicate.json()) == (400, {"error": "Duplicate username."})


@pytest.mark.parametrize("header", [None, "nobody", "", "__system", "../default"])
def test_unknown_user_is_400(multi: ServerProcess, header: str | None) -> None:
    headers = {} if header is None else {"Comfy-User": header}
    for method, path, data in (
        ("GET", "/settings", None),
        ("POST", "/settings/A.B", b"1"),
        ("GET", "/userdata?dir=workflows", None),
        ("GET", "/v2/userdata", None),
        ("POST", "/userdata/x.json", b"{}"),
        ("GET", "/userdata/x.json", None),
    ):
        reply = call(multi.url, method, path, data, headers)
        assert reply.status == 400, (method, path)
        error = reply.json()["error"]
        assert error["type"] == "unknown_user"
        assert "Unknown user" in error["details"] and "Comfy-User" in error["details"]
    assert not (multi.base / "user" / "x.json").exists()


def test_users_are_isolated(multi: ServerProcess) -> None:
    alice, bob = add_user(multi, "alice"), add_user(multi, "bob")
    as_alice, as_bob = {"Comfy-User": alice}, {"Comfy-User": bob}
    call(multi.url, "POST", "/settings/Comfy.Locale", b'"fr"', as_alice)
    call(multi.url, "POST", "/settings", b'{"Comfy.Locale": "de"}', as_bob)
    assert call(multi.url, "GET", "/settings", headers=as_alice).json() == {"Comfy.Locale": "fr"}
    assert call(multi.url, "GET", "/settings/Comfy.Locale", headers=as_bob).json() == "de"

    assert call(multi.url, "POST", "/userdata/workflows%2Fmine.json", b"{}", as_alice).status == 200
    assert call(multi.url, "GET", "/userdata?dir=workflows", headers=as_alice).json() == ["mine.json"]
    theirs = call(multi.url, "GET", "/userdata?dir=workflows", headers=as_bob)
    assert (theirs.status, theirs.body) == (404, b"Directory not found")
    assert call(multi.url, "GET", "/userdata/workflows%2Fmine.json", headers=as_bob).status == 404
    assert call(multi.url, "GET", "/v2/userdata", headers=as_bob).json()[0]["name"] == "comfy.settings.json"
    # Reaching into a sibling user's folder is traversal.
    sneaky = call(multi.url, "GET", f"/userdata/..%2F{alice}%2Fworkflows%2Fmine.json", headers=as_bob)
    assert sneaky.status == 403
    assert (multi.base / "user" / alice / "workflows" / "mine.json").is_file()
    assert json.loads((multi.base / "user" / bob / "comfy.settings.json").read_text()) == {
        "Comfy.Locale": "de"
    }


def test_new_user_v2_listing_is_empty(multi: ServerProcess) -> None:
    dave = add_user(multi, "dave")
    assert call(multi.url, "GET", "/v2/userdata", headers={"Comfy-User": dave}).json() == []


def test_body_at_the_limit_is_accepted(multi: ServerProcess) -> None:
    user = {"Comfy-User": add_user(multi, "big")}
    reply = call(multi.url, "POST", "/userdata/limit.bin", b"x" * UPLOAD_LIMIT, user)
    assert reply.status == 200
    assert (multi.base / "user" / user["Comfy-User"] / "limit.bin").stat().st_size == UPLOAD_LIMIT


def _post_chunked(server: ServerProcess, path: str, chunks: Iterator[bytes], headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", path, body=chunks, headers=headers, encode_chunked=True)
        return conn.getresponse().status
    finally:
        conn.close()


def test_bodies_over_the_limit_are_413(multi: ServerProcess) -> None:
    user_id = add_user(multi, "huge")
    headers = {"Comfy-User": user_id}
    folder = multi.base / "user" / user_id
    declared = call(multi.url, "POST", "/userdata/big.bin", b"x" * (UPLOAD_LIMIT + 1), headers)
    assert declared.status == 413
    assert b"limit" in declared.body
    # Without a Content-Length the server counts while it streams.
    status = _post_chunked(multi, "/userdata/big2.bin", iter([b"y" * 65536] * 17), headers)
    assert status == 413
    assert not folder.exists() or [p.name for p in folder.rglob("*")] == []
    # The previous file survives a rejected overwrite.
    call(multi.url, "POST", "/userdata/keep.bin", b"old", headers)
    assert call(multi.url, "POST", "/userdata/keep.bin", b"z" * (UPLOAD_LIMIT + 10), headers).status == 413
    assert (folder / "keep.bin").read_bytes() == b"old"
    assert sorted(os.listdir(folder)) == ["keep.bin"]
