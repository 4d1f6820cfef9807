"""The two web UI builds the browser tests run: the installed `comfyui-frontend-package` (a
dependency, 1.58 or newer) and ComfyUI 0.8's own pin, 1.35.9, served with `--front-end-root`.

1.35.9 is fetched once with pip (PyPI) and unpacked into `.cache/frontend/` (git-ignored).
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

from comfyserve.server.routes.frontend import frontend_package_root

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "frontend"
INSTALLED = "installed"
OLD = "1.35.9"  # what ComfyUI 0.8 pins (requirements.txt)
VERSIONS = [INSTALLED, OLD]


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def unpacked(version: str) -> Path:
    """The `static/` folder of comfyui-frontend-package==`version`, downloaded on first use."""
    target = CACHE / version / "static"
    with _locked(CACHE / f"{version}.lock"):
        if (target / "index.html").is_file():
            return target
        with tempfile.TemporaryDirectory() as download:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                 "-d", download, f"comfyui-frontend-package=={version}"],
                check=True,
            )
            wheel = next(Path(download).glob("*.whl"))
            prefix = "comfyui_frontend_package/static/"
            staging = CACHE / version / "static.partial"
            with zipfile.ZipFile(wheel) as archive:
                for member in archive.namelist():
                    if member.startswith(prefix) and not member.endswith("/"):
                        destination = staging / member[len(prefix):]
                        destination.parent.mkdir(parents=True, exist_ok=True)
                        destination.write_bytes(archive.read(member))
            staging.rename(target)
    return target


def server_args(version: str) -> list[str]:
    """comfyserve flags that serve `version`: nothing for the installed package."""
    if version == INSTALLED:
        if frontend_package_root() is None:
            raise RuntimeError("comfyui-frontend-package is not installed (pip install -e '.[test]')")
        return []
    return ["--front-end-root", str(unpacked(version))]
