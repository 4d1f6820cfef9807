"""ComfyUI's module names for custom node packs, backed by comfyserve.

Packs written for ComfyUI import `folder_paths`, `server`, `comfy.utils`,
`comfy.model_management`, `comfy.comfy_types`, `comfy.cli_args`, `comfy_execution.graph(_utils)`
and `nodes`.
The implementations live here, one module per name (`comfyserve.compat.folder_paths`, …,
`comfyserve.compat.comfy.utils`); `nodes` is our own top-level package already.

How the names resolve: `install()` (the loader calls it just before it imports packs) puts an
`AliasFinder` first in `sys.meta_path`. For `folder_paths`, `server`, `comfy`, `comfy_execution`
and anything below them it answers with the module of the same name under this package; the
module object is shared (`sys.modules["folder_paths"] is comfyserve.compat.folder_paths`), so
state is never duplicated. A name below an alias that we do not implement (`comfy.sd`) is a
plain ModuleNotFoundError, and the pack that needs it fails to import, with a traceback.

Decisions:
- Nothing is installed by importing comfyserve as a library, and none of these names is a
  top-level package of our distribution, so a ComfyUI checkout or install beside us is never
  shadowed outside a running comfyserve server.
- Inside the server the aliases win over a real module of the same name found on `sys.path`
  (say the server was started from inside a ComfyUI checkout): that module would talk to
  another server's folders, progress and interrupt flag, so packs would silently misbehave.
  Each such shadowed module is logged once as a warning.
- A name that is already imported (`sys.modules`) when `install()` runs is left alone and
  logged: replacing a module other code holds would split its state.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import threading
from types import ModuleType

log = logging.getLogger(__name__)

# Top-level names packs import; each maps to `comfyserve.compat.<name>` (and its submodules).
ALIAS_ROOTS = ("folder_paths", "server", "comfy", "comfy_execution")
TARGET_PACKAGE = __name__

_install_lock = threading.Lock()


def target_of(fullname: str) -> str | None:
    """The comfyserve module behind alias `fullname`, or None when it is not one of ours."""
    root = fullname.partition(".")[0]
    if root not in ALIAS_ROOTS:
        return None
    return f"{TARGET_PACKAGE}.{fullname}"


class _AliasLoader(importlib.abc.Loader):
    """Hands the import system the already-imported comfyserve module instead of a new one."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._real_spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self._real_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system stamped the alias spec on the shared module; give it its own back,
        # so the module keeps reporting (and reloading as) what it really is.
        if self._real_spec is not None:
            module.__spec__ = self._real_spec


class AliasFinder(importlib.abc.MetaPathFinder):
    """A meta path finder for ALIAS_ROOTS (placed first, so real modules of those names lose)."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001 - importlib's signature
        real_name = target_of(fullname)
        if real_name is None:
            return None
        root = fullname.partition(".")[0]
        present = sys.modules.get(root)
        if root != fullname and present is not None and not _is_ours(present):
            return None  # below a real module of that name: not ours to fill in
        try:
            real = importlib.util.find_spec(real_name)
        except ModuleNotFoundError:
            return None
        if real is None:
            return None
        spec = importlib.machinery.ModuleSpec(
            fullname, _AliasLoader(real_name), is_package=real.submodule_search_locations is not None
        )
        if real.submodule_search_locations is not None:
            spec.submodule_search_locations = list(real.submodule_search_locations)
        return spec


def _is_ours(module: ModuleType) -> bool:
    return getattr(module, "__name__", "").startswith(TARGET_PACKAGE + ".")


_FINDER = AliasFinder()


def installed() -> bool:
    return _FINDER in sys.meta_path


def install() -> None:
    """Make the ComfyUI module names importable in this process (idempotent, thread-safe)."""
    with _install_lock:
        if installed():
            return
        for name in ALIAS_ROOTS:
            present = sys.modules.get(name)
            if present is not None:
                log.warning(
                    "custom nodes will get the already imported module %r (%s), not comfyserve's",
                    name,
                    getattr(present, "__file__", None) or present,
                )
                continue
            shadowed = importlib.machinery.PathFinder.find_spec(name)
            if shadowed is not None:
                log.warning(
                    "custom nodes get comfyserve's %r; the module of that name at %s is not used in this server",
                    name,
                    shadowed.origin or (shadowed.submodule_search_locations or ["?"])[0],
                )
        sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    """Remove the finder and the aliases it created (tests)."""
    with _install_lock:
        if _FINDER in sys.meta_path:
            sys.meta_path.remove(_FINDER)
        for name in list(sys.modules):
            if target_of(name) is not None and _is_ours(sys.modules[name]):
                del sys.modules[name]
