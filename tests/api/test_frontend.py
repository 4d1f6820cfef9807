"""The web UI at `/`: index.html with no-cache headers, static files kept inside their folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyserve.config import Settings
from comfyserve.server.routes import frontend
from tests.api.client import get, request
from tests.conftest import reference
from tests.serverproc import ServerProcess

BASIC = reference("routes_basic.json")
NO_CACHE = {"Cache-Control": "no-cache", "Pragma": "no-cache", "Expires": "0"}


def ref_response(name: str) -> dict:
    return BASIC[name]["response"]


def assert_empty_404(reply) -> None:
    assert (reply.status, reply.body, reply.headers["Content-Type"]) == (404, b"", "application/octet-stream")


@pytest.fixture(scope="module")
def ui_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in frontend build, with a secret next to it that must never be served."""
    top = tmp_path_factory.mktemp("ui")
    (top / "secret.txt").write_text("do not serve")
    root = top / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "extensions" / "core" / "tools").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>Test UI</title>")
    (root / "assets" / "app.js").write_text("console.log('ui');")
    (root / "assets" / "style.css").write_text("body{}")
    (root / "assets" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "extensions" / "core" / "a.js").write_text("export {};")
    (root / "extensions" / "core" / "tools" / "b.js").write_text("export {};")
    (root / "leak.txt").symlink_to(top / "secret.txt")
    return root


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory, ui_root: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("base"), args=["--front-end-root", str(ui_root)]).start()
    yield proc
    proc.stop()


# -- the default server: the frontend package if installed, else our own page -------------


@pytest.mark.parametrize("path", ["/", "/api/"])
def test_index_has_no_cache_headers(server, path):
    reply = get(server.url, path)
    expected = ref_response(f"GET {path}")
    assert reply.status == expected["status"] == 200
    assert reply.headers["Content-Type"] == expected["headers"]["Content-Type"] == "text/html"
    for header, value in NO_CACHE.items():
        assert reply.headers[header] == expected["headers"][header] == value
    default_root = frontend.find_web_root(Settings())
    assert reply.body == (default_root / "index.html").read_bytes()


def test_index_html_by_name_is_cacheable_and_not_under_api(server):
    reply = get(server.url, "/index.html")
    assert (reply.status, reply.headers["Content-Type"]) == (200, "text/html")
    assert "Cache-Control" not in reply.headers
    assert_empty_404(get(server.url, "/api/index.html"))


def test_head_index(server):
    reply = request(server.url, "HEAD", "/")
    assert (reply.status, reply.headers["Content-Type"], reply.body) == (200, "text/html", b"")
    assert int(reply.headers["Content-Length"]) == len(get(server.url, "/").body)


@pytest.mark.parametrize("path", ["/favicon.ico", "/api/favicon.ico", "/no/such/route", "/api/no/such/route",
                                  "/embeddings/", "/..%2Fpyproject.toml", "/%2e%2e/%2e%2e/etc/passwd",
                                  "/extensions/comfyserve/..%2F..%2Fpyproject.toml", "/extensions/nope/index.html"])
def test_unknown_or_escaping_paths_are_empty_404(server, path):
    assert_empty_404(get(server.url, path))


def test_own_web_folder_is_a_registered_extension_folder(server):
    reply = get(server.url, "/extensions/comfyserve/index.html")
    assert reply.status == 200
    assert reply.body == (frontend.OWN_WEB_DIR / "index.html").read_bytes()


def test_placeholder_page_is_used_without_a_frontend(monkeypatch):
    monkeypatch.setattr(frontend, "frontend_package_root", lambda: None)
    root = frontend.find_web_root(Settings())
    assert root == frontend.OWN_WEB_DIR
    page = (root / "index.html").read_text()
    assert "pip install comfyui-frontend-package" in page and "--front-end-root" in page
    assert 'href="system_stats"' in page and 'href="object_info"' in page


def test_frontend_package_static_folder_is_found(tmp_path, monkeypatch):
    static = tmp_path / "comfyui_frontend_package" / "static"
    static.mkdir(parents=True)
    (static.parent / "__init__.py").write_text("")
    (static / "index.html").write_text("<!doctype html>")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert frontend.frontend_package_root() == static
    assert frontend.find_web_root(Settings()) == static


def test_front_end_root_setting_wins(tmp_path):
    assert frontend.find_web_root(Settings(front_end_root=tmp_path)) == tmp_path.resolve()


# -- --front-end-root DIR -----------------------------------------------------------------


def test_front_end_root_serves_its_index(ui_server, ui_root):
    for path in ("/", "/api/"):
        reply = get(ui_server.url, path)
        assert (reply.status, reply.body) == (200, (ui_root / "index.html").read_bytes())
        assert {h: reply.headers[h] for h in NO_CACHE} == NO_CACHE


@pytest.mark.parametrize(
    ("path", "content_type", "cache"),
    [
        ("/assets/app.js", "application/javascript; charset=utf-8", "no-cache"),
        ("/assets/style.css", "text/css", "no-cache"),
        ("/assets/logo.png", "image/png", "public, max-age=86400"),
        ("/extensions/core/tools/b.js", "application/javascript; charset=utf-8", "no-cache"),
    ],
)
def test_static_files_with_types_and_cache_headers(ui_server, ui_root, path, content_type, cache):
    reply = get(ui_server.url, path)
    assert reply.status == 200
    assert reply.body == (ui_root / path.lstrip("/")).read_bytes()
    assert reply.headers["Content-Type"] == content_type
    assert reply.headers["Cache-Control"] == cache


def test_extension_scripts_are_listed(ui_server):
    for path in ("/extensions", "/api/extensions"):
        reply = get(ui_server.url, path)
        assert reply.headers["Content-Type"] == "application/json; charset=utf-8"
        assert reply.json() == ["/extensions/core/a.js", "/extensions/core/tools/b.js"]


@pytest.mark.parametrize("path", ["/secret.txt", "/..%2Fsecret.txt", "/assets/..%2F..%2Fsecret.txt", "/leak.txt",
                                  "/assets", "/assets/", "/api/assets/app.js"])
def test_nothing_outside_the_root_and_no_directories(ui_server, path):
    assert_empty_404(get(ui_server.url, path))
