"""Translations, example workflows and subgraphs found in custom node pack folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyserve import nodepack_files


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A custom_nodes folder with two packs, a hidden folder and a stray file."""
    base = tmp_path / "custom_nodes"
    write(base / "pack_a" / "locales" / "en" / "main.json", {"nodeDefs": {"A": {"display_name": "A"}}, "x": 1})
    write(base / "pack_a" / "locales" / "en" / "commands.json", {"cmd": "Run"})
    write(base / "pack_a" / "example_workflows" / "basic.json", {})
    write(base / "pack_a" / "example_workflows" / "notes.txt", "not json")
    write(base / "pack_a" / "subgraphs" / "blur.json", {"nodes": []})
    write(base / "pack_b" / "locales" / "en" / "main.json", {"nodeDefs": {"B": {"display_name": "B"}}, "x": 2})
    write(base / "pack_b" / "locales" / "fr" / "main.json", {"nodeDefs": {"B": {"display_name": "Bé"}}})
    write(base / "pack_b" / "my_workflows" / "w1.json", {})
    write(base / "pack_b" / "Examples" / "ignored.json", {})  # case matters, as in ComfyUI
    write(base / ".hidden" / "example" / "h.json", {})
    write(base / "single_file_node.py", "")
    return base


def test_pack_dirs_skip_files_and_hidden_folders(root):
    assert [p.name for p in nodepack_files.pack_dirs([root, root / "missing"])] == ["pack_a", "pack_b"]


def test_translations_merge_packs_per_language(root):
    result = nodepack_files.translations([root])
    assert result == {
        "en": {
            "nodeDefs": {"A": {"display_name": "A"}, "B": {"display_name": "B"}},
            "x": 2,
            "commands": {"cmd": "Run"},
        },
        "fr": {"nodeDefs": {"B": {"display_name": "Bé"}}},
    }


def test_broken_locale_file_is_skipped(root):
    write(root / "pack_a" / "locales" / "en" / "main.json", "{not json")
    assert nodepack_files.translations([root])["en"]["commands"] == {"cmd": "Run"}


def test_workflow_templates_list_json_names_per_pack(root):
    assert nodepack_files.workflow_templates([root]) == {"pack_a": ["basic"], "pack_b": ["w1"]}


def test_workflow_template_file_stays_in_its_folder(root):
    found = nodepack_files.workflow_template_file([root], "pack_b", "w1.json")
    assert found == (root / "pack_b" / "my_workflows" / "w1.json").resolve()
    assert nodepack_files.workflow_template_file([root], "pack_b", "../locales/en/main.json") is None
    assert nodepack_files.workflow_template_file([root], "pack_b", "missing.json") is None
    assert nodepack_files.workflow_template_file([root], "nope", "w1.json") is None


def test_global_subgraphs_have_stable_ids_and_data_on_request(root):
    listing = nodepack_files.global_subgraphs([root])
    [(subgraph_id, entry)] = listing.items()
    assert entry == {"source": "custom_node", "name": "blur", "info": {"node_pack": "custom_nodes.pack_a"}}
    assert nodepack_files.global_subgraphs([root]) == listing
    one = nodepack_files.global_subgraph([root], subgraph_id)
    assert one == {**entry, "data": json.dumps({"nodes": []})}
    assert nodepack_files.global_subgraph([root], "unknown") is None


def test_merge_recursive_merges_nested_objects_only():
    merged = nodepack_files.merge_recursive({"a": {"x": 1, "y": 1}, "b": [1]}, {"a": {"y": 2}, "b": [2]})
    assert merged == {"a": {"x": 1, "y": 2}, "b": [2]}
