"""`/templates/*`: the workflow templates of the installed template packages (the UI's templates
browser), or an empty catalogue when none is installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyserve.server.routes import frontend
from tests.api.client import get
from tests.serverproc import ServerProcess


def fake_package(root: Path, name: str, files: dict[str, bytes]) -> None:
    package = root / name
    (package / "templates").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for relative, data in files.items():
        (package / "templates" / relative).parent.mkdir(parents=True, exist_ok=True)
        (package / "templates" / relative).write_bytes(data)


INDEX = [{"moduleName": "default", "title": "Basics", "type": "image", "templates": [{"name": "first"}]}]


@pytest.fixture
def packages(tmp_path: Path) -> Path:
    """The split layout of comfyui-workflow-templates 0.3+: a JSON bundle and a media bundle."""
    root = tmp_path / "site"
    fake_package(root, "comfyui_workflow_templates_json", {
        "index.json": json.dumps(INDEX).encode(), "first.json": b'{"nodes": []}',
    })
    fake_package(root, "comfyui_workflow_templates_media_image", {"first-1.webp": b"RIFF0000WEBPVP8 "})
    (root / "comfyui_workflow_templates_media_image" / "secret.txt").write_text("not a template")
    return root


def test_template_folders_are_found_json_bundle_first(packages, monkeypatch):
    monkeypatch.syspath_prepend(str(packages))
    found = frontend.template_directories()
    assert found[:2] == [packages / "comfyui_workflow_templates_json" / "templates",
                         packages / "comfyui_workflow_templates_media_image" / "templates"]


def test_templates_are_served_from_the_installed_packages(packages, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(packages))
    server = ServerProcess(tmp_path / "base").start()
    try:
        index = get(server.url, "/templates/index.json")
        assert (index.status, index.json()) == (200, INDEX)
        assert get(server.url, "/templates/first.json").json() == {"nodes": []}
        thumb = get(server.url, "/templates/first-1.webp")
        assert (thumb.status, thumb.body) == (200, b"RIFF0000WEBPVP8 ")
        assert thumb.headers["Cache-Control"] == "public, max-age=86400"
        for path in ("/templates/index_logo.json", "/templates/nope.webp", "/templates/..%2Fsecret.txt",
                     "/api/templates/index.json"):
            reply = get(server.url, path)
            assert (reply.status, reply.body) == (404, b""), path
    finally:
        server.stop()


def test_without_template_packages_the_catalogue_is_empty(server):
    if frontend.template_directories():
        pytest.skip("a workflow-templates package is installed here")
    index = get(server.url, "/templates/index.json")
    assert (index.status, index.headers["Content-Type"], index.json()) == (200, "application/json; charset=utf-8", [])
    assert get(server.url, "/templates/index_logo.json").json() == {}
    assert get(server.url, "/templates/first.json").status == 404
