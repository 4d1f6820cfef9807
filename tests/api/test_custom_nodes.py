"""Custom node packs load unchanged: real packs (tests/packs/) in a real server's custom_nodes/.

Everything is checked from outside: /object_info, prompts and /history, websocket frames, the
packs' own routes, /extensions and the files behind it, and the server log's start-up summary.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from tests.api.client import WsClient, get, post, request, types, wait_history
from tests.serverproc import REPO, ServerProcess

PACKS = REPO / "tests" / "packs"


def install_packs(base: Path) -> Path:
    """Copy the test packs into `base/custom_nodes`, plus entries the loader must skip."""
    custom = base / "custom_nodes"
    custom.mkdir(parents=True, exist_ok=True)
    for name in ("cs_test_pack", "cs_broken_pack"):
        shutil.copytree(PACKS / name, custom / name)
    shutil.copy(PACKS / "cs_single_file.py", custom / "cs_single_file.py")
    shutil.copytree(PACKS / "cs_skipped_pack", custom / "cs_skipped_pack.disabled")
    shutil.copytree(PACKS / "cs_skipped_pack", custom / ".cs_hidden_pack")
    (custom / "notes.txt").write_text("not a pack")
    (custom / "cs_test_pack" / "js" / "escape.txt").symlink_to(custom / "cs_test_pack" / "secret.txt")
    checkpoints = base / "models" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / "tiny.safetensors").write_bytes(b"")
    return custom


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("packs")
    install_packs(base)
    proc = ServerProcess(base).start()
    yield proc
    proc.stop()


@pytest.fixture
def ws(server):
    client = WsClient(server.ws_url, f"cs-{uuid.uuid4().hex[:8]}")
    assert client.recv()["type"] == "status"
    yield client
    client.close()


def countdown_prompt(steps: int = 3, delay: float = 0.0) -> dict:
    return {
        "1": {"class_type": "CSCountdown", "inputs": {"steps": steps, "delay": delay}},
        "2": {"class_type": "CSReport", "inputs": {"count": ["1", 0]}},
        "3": {"class_type": "CSSingleEcho", "inputs": {"text": "hello from a file"}},
    }


def submit(server, ws, prompt: dict, **extra) -> str:
    reply = post(server.url, "/prompt", {"prompt": prompt, "client_id": ws.client_id, **extra})
    assert reply.status == 200, reply.body
    return reply.json()["prompt_id"]


# -- registration ----------------------------------------------------------------------------


def test_object_info_lists_pack_nodes_with_their_python_module(server):
    info = get(server.url, "/object_info").json()
    assert info["CSCountdown"]["python_module"] == "custom_nodes.cs_test_pack"
    assert info["CSCountdown"]["display_name"] == "Countdown (test pack)"
    assert info["CSCountdown"]["input"]["required"]["steps"][0] == "INT"  # IO.INT serialises as its name
    assert info["CSReport"]["python_module"] == "custom_nodes.cs_test_pack"
    assert info["CSReport"]["output_node"] is True
    assert info["CSSingleEcho"]["python_module"] == "custom_nodes.cs_single_file"
    assert info["CSSingleEcho"]["display_name"] == "Single-file echo"
    # A pack cannot replace a built-in node; skipped entries load nothing.
    assert info["SaveImage"]["python_module"] == "nodes"
    assert "CSShouldNotLoad" not in info


def test_startup_summary_lists_every_pack_and_marks_the_failed_one(server):
    log = server.log()
    custom = server.base / "custom_nodes"
    assert "Import times for custom nodes:" in log
    assert f"seconds (IMPORT FAILED): {custom / 'cs_broken_pack'}" in log
    assert f"seconds: {custom / 'cs_test_pack'}" in log
    assert f"seconds: {custom / 'cs_single_file.py'}" in log
    assert "RuntimeError: cs_broken_pack refuses to import" in log  # the traceback
    assert "cs_skipped_pack" not in log and "cs_hidden_pack" not in log and "notes.txt" not in log


# -- running pack nodes ----------------------------------------------------------------------


def test_prompt_of_pack_nodes_runs_with_progress_and_send_sync(server, ws):
    prompt_id = submit(server, ws, countdown_prompt(steps=3))
    frames = ws.until_done(prompt_id)
    progress = [f["data"] for f in frames if f["type"] == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(1, 3, "1"), (2, 3, "1"), (3, 3, "1")]
    assert all(p["prompt_id"] == prompt_id for p in progress)
    done = [f for f in frames if f["type"] == "cs_test.done"]
    assert [f["data"] for f in done] == [{"node": "1", "steps": 3}]
    entry = wait_history(server.url, prompt_id)
    assert entry["status"]["status_str"] == "success"
    report = entry["outputs"]["2"]
    assert report["count"] == [3]
    assert report["checkpoints"] == ["tiny.safetensors"]
    assert report["output_directory"] == [str((server.base / "output").resolve())]
    assert report["models_dir"] == [str((server.base / "models").resolve())]
    assert report["max_resolution"] == [16384]
    assert report["device"] == ["cpu"]  # the test server runs with --cpu
    assert entry["outputs"]["3"] == {"text": ["hello from a file"]}


def test_on_prompt_handler_rewrites_the_submitted_prompt(server, ws):
    prompt_id = submit(server, ws, countdown_prompt(steps=3), cs_test_steps=5)
    ws.until_done(prompt_id)
    assert wait_history(server.url, prompt_id)["outputs"]["2"]["count"] == [5]


def test_interrupt_check_inside_a_pack_node_stops_the_prompt(server, ws):
    prompt_id = submit(server, ws, countdown_prompt(steps=400, delay=0.05))
    ws.until(lambda f: isinstance(f, dict) and f["type"] == "progress" and f["data"]["prompt_id"] == prompt_id)
    assert post(server.url, "/interrupt", {}).status == 200
    frames = ws.until_done(prompt_id)
    assert "execution_interrupted" in types(frames)
    assert not any(f["type"] == "cs_test.done" for f in frames if isinstance(f, dict))
    entry = wait_history(server.url, prompt_id)
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    assert "2" not in entry["outputs"]


# -- the packs' routes -----------------------------------------------------------------------


def test_pack_routes_answer_at_both_prefixes(server):
    for path in ("/cs_test/hello", "/api/cs_test/hello"):
        reply = get(server.url, path)
        assert reply.status == 200, path
        assert reply.json() == {"hello": "custom nodes", "input_directory": str((server.base / "input").resolve())}
    reply = get(server.url, "/cs_test/via_app")  # PromptServer.instance.app.add_routes
    assert (reply.status, reply.body) == (200, b"added with app.add_routes")
    assert get(server.url, "/cs_test/nothing-here").status == 404
    wrong_method = request(server.url, "PUT", "/cs_test/hello", raw=b"")
    assert wrong_method.status == 405
    # Built-in routes are untouched.
    assert get(server.url, "/prompt").json() == {"exec_info": {"queue_remaining": 0}}


def test_pack_route_send_sync_broadcasts_to_every_client(server, ws):
    other = WsClient(server.ws_url, "cs-observer")
    try:
        assert other.recv()["type"] == "status"
        reply = post(server.url, "/cs_test/echo", {"ping": 1})
        assert reply.json() == {"ping": 1}
        for client in (ws, other):
            frames = client.until(lambda f: isinstance(f, dict) and f["type"] == "cs_test.echo")
            assert frames[-1]["data"] == {"ping": 1}
    finally:
        other.close()


# -- front-end files -------------------------------------------------------------------------


def test_extensions_lists_and_serves_the_pack_scripts(server):
    scripts = get(server.url, "/extensions").json()
    assert "/extensions/cs_test_pack/main.js" in scripts
    assert "/extensions/cs_test_pack/sub/extra.js" in scripts
    assert not any("cs_broken_pack" in s or "cs_single_file" in s for s in scripts)
    reply = get(server.url, "/extensions/cs_test_pack/main.js")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/javascript")
    assert reply.body == (PACKS / "cs_test_pack" / "js" / "main.js").read_bytes()
    assert get(server.url, "/extensions/cs_test_pack/sub/extra.js").status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/extensions/cs_test_pack/..%2fsecret.txt",
        "/extensions/cs_test_pack/%2e%2e/secret.txt",
        "/extensions/cs_test_pack/%2e%2e%2fsecret.txt",
        "/extensions/cs_test_pack/../secret.txt",
        "/extensions/cs_test_pack/escape.txt",  # a symlink out of the web folder
        "/extensions/cs_test_pack/%2fetc%2fpasswd",
    ],
)
def test_nothing_outside_the_web_directory_is_served(server, path):
    reply = get(server.url, path)
    assert reply.status == 404, path
    assert b"outside the web directory" not in reply.body


# -- --disable-all-custom-nodes / --whitelist-custom-nodes --------------------------------------


def test_disable_all_loads_only_the_whitelisted_packs(make_server, tmp_path):
    base = tmp_path / "restricted"
    install_packs(base)
    srv = make_server("--disable-all-custom-nodes", "--whitelist-custom-nodes", "cs_single_file.py", base=base)
    info = get(srv.url, "/object_info").json()
    assert info["CSSingleEcho"]["python_module"] == "custom_nodes.cs_single_file"
    assert "CSCountdown" not in info
    assert get(srv.url, "/cs_test/hello").status == 404
    assert not any("cs_test_pack" in s for s in get(srv.url, "/extensions").json())
    log = srv.log()
    assert "Skipping cs_test_pack due to disable_all_custom_nodes and whitelist_custom_nodes" in log
    assert "Skipping cs_broken_pack due to disable_all_custom_nodes" in log
    assert "(IMPORT FAILED)" not in log
