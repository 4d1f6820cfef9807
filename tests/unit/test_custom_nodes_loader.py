"""Finding and importing custom node packs, ComfyUI's way, without a server."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from comfyserve.config import Settings
from comfyserve.engine import custom_nodes
from comfyserve.engine.registry import NodeRegistry
from comfyserve.paths import Folders

NODE_SOURCE = '''
class {name}:
    @classmethod
    def INPUT_TYPES(cls):
        return {{"required": {{}}}}
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    def run(self):
        return {{}}
'''


def pack_source(*names: str, extra: str = "") -> str:
    classes = "".join(NODE_SOURCE.format(name=n) for n in names)
    mapping = ", ".join(f"{n!r}: {n}" for n in names)
    return f"{classes}\nNODE_CLASS_MAPPINGS = {{{mapping}}}\n{extra}"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def builtin_nodes(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A stand-in `nodes` module, so loading test packs leaves the real one alone."""
    stub = SimpleNamespace(NODE_CLASS_MAPPINGS={}, NODE_DISPLAY_NAME_MAPPINGS={})
    monkeypatch.setitem(sys.modules, "nodes", stub)
    return stub


@pytest.fixture
def ctx(tmp_path: Path, builtin_nodes: SimpleNamespace):
    settings = Settings(base_directory=tmp_path / "base.with.dots")
    folders = Folders.from_settings(settings)
    folders.ensure()
    registry = NodeRegistry()

    class Builtin:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

        RETURN_TYPES = ()
        FUNCTION = "run"

    registry.register_mappings({"SaveImage": Builtin}, python_module="nodes")
    made = SimpleNamespace(settings=settings, folders=folders, registry=registry, extras={})
    yield made
    for name in [n for n in sys.modules if n.startswith(str(folders.custom_nodes).replace(".", "_x_"))]:
        del sys.modules[name]


def test_find_packs_order_and_skips(ctx):
    root = ctx.folders.custom_nodes
    write(root / "b_pack" / "__init__.py", "")
    write(root / "a_file.py", "")
    write(root / "c_pack" / "__init__.py", "")
    write(root / "off_pack.disabled" / "__init__.py", "")
    write(root / ".hidden" / "__init__.py", "")
    write(root / "__pycache__" / "x.pyc", "")
    write(root / "notes.txt", "")
    write(root / "no_init" / "module.py", "")
    found = custom_nodes.find_packs([root])
    assert [p.name for p in found] == ["a_file.py", "b_pack", "c_pack"]
    assert [p.name for p in custom_nodes.find_packs([root], disable_all=True, whitelist=["c_pack", "a_file.py"])] == [
        "a_file.py",
        "c_pack",
    ]
    assert custom_nodes.find_packs([root], disable_all=True) == []
    assert custom_nodes.find_packs([root / "missing"]) == []


def test_load_registers_nodes_web_dirs_and_reports_failures(ctx, builtin_nodes, caplog):
    root = ctx.folders.custom_nodes
    write(root / "good_pack" / "__init__.py", "from .impl import NODE_CLASS_MAPPINGS\nWEB_DIRECTORY = 'web'\n")
    write(root / "good_pack" / "impl.py", pack_source("GoodNode", "SaveImage"))
    write(root / "good_pack" / "web" / "a.js", "")
    write(root / "single.py", pack_source("SingleNode", extra="NODE_DISPLAY_NAME_MAPPINGS = {'SingleNode': 'Single'}"))
    write(root / "broken" / "__init__.py", "import no_such_module_anywhere\n")
    write(root / "exits" / "__init__.py", "import sys\nsys.exit(3)\n")
    write(root / "empty" / "__init__.py", "X = 1\n")
    write(root / "v3" / "__init__.py", "def comfy_entrypoint():\n    pass\n")
    with caplog.at_level(logging.INFO, logger="comfyserve.engine.custom_nodes"):
        results = custom_nodes.load_custom_nodes(ctx)
    by_name = {r.name: r for r in results}
    assert {n: r.ok for n, r in by_name.items()} == {
        "broken": False,
        "empty": False,
        "exits": False,
        "good_pack": True,
        "single": True,
        "v3": False,
    }
    entries = ctx.registry.entries
    assert entries["GoodNode"].python_module == "custom_nodes.good_pack"
    assert entries["SingleNode"].python_module == "custom_nodes.single"
    assert entries["SingleNode"].display_name == "Single"
    assert entries["SaveImage"].python_module == "nodes"  # built-ins are never replaced
    assert entries["GoodNode"].cls.RELATIVE_PYTHON_MODULE == "custom_nodes.good_pack"
    assert by_name["good_pack"].nodes == ["GoodNode"]
    # Pack classes join `nodes.NODE_CLASS_MAPPINGS`, as in ComfyUI.
    assert set(builtin_nodes.NODE_CLASS_MAPPINGS) == {"GoodNode", "SingleNode"}
    assert builtin_nodes.NODE_DISPLAY_NAME_MAPPINGS == {"SingleNode": "Single"}
    assert ctx.extras["web_directories"] == {"good_pack": (root / "good_pack" / "web").resolve()}
    assert "ModuleNotFoundError" in by_name["broken"].error
    # ComfyUI's summary, and the failed pack's traceback.
    text = caplog.text
    assert "Import times for custom nodes:" in text
    assert f"seconds (IMPORT FAILED): {root / 'broken'}" in text
    assert f"seconds: {root / 'good_pack'}" in text
    assert "Traceback (most recent call last)" in text and "no_such_module_anywhere" in text
    assert "lack of NODE_CLASS_MAPPINGS" in text
    # A failed import leaves nothing behind; a good one is importable under ComfyUI's name.
    assert not any(name.endswith("broken") for name in sys.modules)
    good_name = str(root / "good_pack").replace(".", "_x_")
    assert sys.modules[good_name].NODE_CLASS_MAPPINGS.keys() == {"GoodNode", "SaveImage"}
    assert f"{good_name}.impl" in sys.modules  # the relative import went through the package


def test_pyproject_web_directory(ctx):
    root = ctx.folders.custom_nodes
    write(root / "tomlpack" / "__init__.py", pack_source("TomlNode"))
    write(root / "tomlpack" / "pyproject.toml", '[project]\nname = "toml-pack"\n[tool.comfy]\nweb = "front"\n')
    write(root / "tomlpack" / "front" / "x.js", "")
    custom_nodes.load_custom_nodes(ctx)
    assert ctx.extras["web_directories"] == {"toml-pack": (root / "tomlpack" / "front").resolve()}


def test_a_later_pack_may_replace_an_earlier_packs_node(ctx):
    root = ctx.folders.custom_nodes
    write(root / "a_first.py", pack_source("Shared"))
    write(root / "b_second.py", pack_source("Shared"))
    custom_nodes.load_custom_nodes(ctx)
    assert ctx.registry.entries["Shared"].python_module == "custom_nodes.b_second"


def test_no_packs_no_summary(ctx, caplog):
    with caplog.at_level(logging.INFO):
        assert custom_nodes.load_custom_nodes(ctx) == []
    assert "Import times" not in caplog.text
