"""The import aliases: ComfyUI's module names resolve to comfyserve's modules, one object each."""

from __future__ import annotations

import importlib
import sys

import pytest

from comfyserve import compat
from tests.unit.compat_fixtures import aliases  # noqa: F401 - fixture

ALIASED = {
    "folder_paths": "comfyserve.compat.folder_paths",
    "server": "comfyserve.compat.server",
    "comfy": "comfyserve.compat.comfy",
    "comfy.utils": "comfyserve.compat.comfy.utils",
    "comfy.model_management": "comfyserve.compat.comfy.model_management",
    "comfy.cli_args": "comfyserve.compat.comfy.cli_args",
    "comfy.comfy_types": "comfyserve.compat.comfy.comfy_types",
    "comfy.comfy_types.node_typing": "comfyserve.compat.comfy.comfy_types.node_typing",
    "comfy_execution": "comfyserve.compat.comfy_execution",
    "comfy_execution.graph": "comfyserve.compat.comfy_execution.graph",
    "comfy_execution.graph_utils": "comfyserve.compat.comfy_execution.graph_utils",
}


def test_nothing_is_aliased_until_install():
    # Importing comfyserve (done by every test) must not make ComfyUI's names importable.
    if compat.installed():
        pytest.skip("another test of this process installed the aliases")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("folder_paths")


@pytest.mark.usefixtures("aliases")
@pytest.mark.parametrize("alias", sorted(ALIASED))
def test_alias_is_the_comfyserve_module_itself(alias):
    module = importlib.import_module(alias)
    assert module is importlib.import_module(ALIASED[alias])
    assert sys.modules[alias] is module
    # The shared module keeps its own identity.
    assert module.__name__ == ALIASED[alias]
    assert module.__spec__.name == ALIASED[alias]


@pytest.mark.usefixtures("aliases")
def test_from_imports_and_attribute_access_work():
    import comfy.utils
    from comfy.model_management import InterruptProcessingException
    from comfy_execution.graph import ExecutionBlocker
    from comfy_execution.graph_utils import GraphBuilder

    from comfyserve.engine import blocker, graph_builder, interrupt

    assert InterruptProcessingException is interrupt.InterruptProcessingException
    assert ExecutionBlocker is blocker.ExecutionBlocker
    assert GraphBuilder is graph_builder.GraphBuilder
    assert comfy.utils.ProgressBar is importlib.import_module("comfyserve.compat.comfy.utils").ProgressBar


@pytest.mark.usefixtures("aliases")
def test_unprovided_comfy_modules_fail_plainly():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("comfy.sd")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("comfy_execution.caching")


@pytest.mark.usefixtures("aliases")
def test_nodes_is_the_builtin_package():
    import nodes

    assert nodes.MAX_RESOLUTION == 16384
    assert "SaveImage" in nodes.NODE_CLASS_MAPPINGS


def test_install_is_idempotent_and_first_in_meta_path(aliases):  # noqa: F811
    compat.install()
    assert sum(1 for f in sys.meta_path if isinstance(f, compat.AliasFinder)) == 1
    assert isinstance(sys.meta_path[0], compat.AliasFinder)


def test_an_already_imported_module_of_an_alias_name_is_left_alone(monkeypatch):
    was_installed = compat.installed()
    if was_installed:
        compat.uninstall()
    fake = type(sys)("server")
    monkeypatch.setitem(sys.modules, "server", fake)
    try:
        compat.install()
        assert importlib.import_module("server") is fake
    finally:
        compat.uninstall()
        if was_installed:
            compat.install()
