"""The web UI: `index.html` at `/` (and `/api/`), its static files, and custom nodes' web folders.

Where the UI comes from, first match wins: `--front-end-root DIR`; the `comfyui-frontend-package`
Python package; else our own small page in the repository's `web/` folder, which says how to
install the UI and links to the API. Custom node packs register web folders in
`ctx.extras["web_directories"]` (name → folder); those are served at `/extensions/<name>/…`,
only from inside the folder. The routes packs add are mounted here too (`custom_routes`),
just before the static catch-all.

`/templates/<file>` comes from the installed workflow-template packages (`comfyui-workflow-templates`
and, from its 0.3 split on, its `comfyui_workflow_templates_*` bundles: each has a `templates/`
folder; the first that has the file wins). Without any, `/templates/index.json` and
`/templates/index_logo.json` answer an empty catalogue (`[]`, `{}`) instead of ComfyUI's 404, so
the UI's templates browser opens empty rather than logging an error.
"""

from __future__ import annotations

import asyncio
import glob
import importlib.util
import json
import logging
import pkgutil
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from comfyserve.config import Settings
from comfyserve.paths import PathEscape, safe_join
from comfyserve.server import custom_routes
from comfyserve.server.context import ServerContext, context_of
from comfyserve.server.custom_routes import CUSTOM_ROUTES
from comfyserve.server.responses import json_response

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

FRONTEND_PACKAGE = "comfyui_frontend_package"
# Our own folder: the fallback page, and front-end extensions of comfyserve itself.
OWN_WEB_DIR = Path(__file__).resolve().parents[3] / "web"
OWN_EXTENSION_NAME = "comfyserve"
WEB_ROOT = "web_root"
WEB_DIRECTORIES = "web_directories"
TEMPLATE_DIRS = "template_dirs"
TEMPLATE_PACKAGE = "comfyui_workflow_templates"
# The catalogue files the UI always asks for, and what they are when no template is installed.
EMPTY_TEMPLATE_FILES = {"index.json": [], "index_logo.json": {}}

NO_CACHE_HEADERS = {"Cache-Control": "no-cache", "Pragma": "no-cache", "Expires": "0"}
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})
ONE_DAY = 86400


def frontend_package_root() -> Path | None:
    """The `static/` folder of the installed frontend package, found without importing it."""
    spec = importlib.util.find_spec(FRONTEND_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        static = Path(location) / "static"
        if (static / "index.html").is_file():
            return static
    return None


def find_web_root(settings: Settings) -> Path:
    """The folder the web UI is served from."""
    if settings.front_end_root is not None:
        root = Path(settings.front_end_root).resolve()
        if not (root / "index.html").is_file():
            log.warning("--front-end-root %s has no index.html; / will answer 404", root)
        return root
    return frontend_package_root() or OWN_WEB_DIR


def template_directories() -> list[Path]:
    """The `templates/` folders of the installed workflow-template packages, found without
    importing them: the JSON bundle first (workflows and the index), then the media bundles."""
    names = sorted(
        {m.name for m in pkgutil.iter_modules() if m.name.startswith(TEMPLATE_PACKAGE)},
        key=lambda name: (not name.endswith("_json"), name),
    )
    found: list[Path] = []
    for name in names:
        spec = importlib.util.find_spec(name)
        for location in (spec.submodule_search_locations or []) if spec else []:
            folder = Path(location) / "templates"
            if folder.is_dir() and folder not in found:
                found.append(folder)
    return found


def web_directories(ctx: ServerContext) -> dict[str, Path]:
    """The registry of custom node web folders (name → folder) that custom node loading fills."""
    return ctx.extras.setdefault(WEB_DIRECTORIES, {})


def setup(app: web.Application, ctx: ServerContext) -> None:
    """Pick the UI folder and add the UI routes; the catch-all static route must come last."""
    root = find_web_root(ctx.settings)
    ctx.extras[WEB_ROOT] = root
    if OWN_WEB_DIR.is_dir():
        web_directories(ctx).setdefault(OWN_EXTENSION_NAME, OWN_WEB_DIR)
    if root == OWN_WEB_DIR:
        log.info("web UI package not installed; serving a placeholder page (pip install comfyui-frontend-package)")
    else:
        log.info("web UI served from %s", root)
    ctx.extras[TEMPLATE_DIRS] = template_directories()
    app.router.add_get("/", index)
    app.router.add_get("/api/", index)
    # Custom node packs' routes: after every built-in route, before the static files.
    ctx.extras[CUSTOM_ROUTES] = custom_routes.mount(app)
    app.router.add_get("/{path:.*}", static_file)


async def index(request: web.Request) -> web.StreamResponse:
    page = _existing_file(context_of(request).extras[WEB_ROOT], "index.html")
    if page is None:
        raise web.HTTPNotFound()
    return web.FileResponse(page, headers=NO_CACHE_HEADERS)


def _existing_file(base: Path, relative: str) -> Path | None:
    if not relative:
        return None
    try:
        path = safe_join(base, relative)
    except PathEscape:
        return None
    return path if path.is_file() else None


def resolve_static(web_root: Path, directories: dict[str, Path], relative: str) -> Path | None:
    """The file for URL path `relative`: in a registered web folder for `extensions/<name>/…`,
    else under the UI root; None when there is none (or it would leave its folder)."""
    parts = relative.split("/", 2)
    if len(parts) == 3 and parts[0] == "extensions" and parts[1] in directories:
        return _existing_file(directories[parts[1]], parts[2])
    return _existing_file(web_root, relative)


def resolve_template(template_dirs: list[Path], relative: str) -> Path | None:
    """The file for `/templates/<relative>` in the first template folder that has it."""
    for folder in template_dirs:
        path = _existing_file(folder, relative)
        if path is not None:
            return path
    return None


def _cache_headers(path: Path) -> dict[str, str]:
    suffix = path.suffix.lower()
    if suffix in (".js", ".css"):
        return {"Cache-Control": "no-cache"}
    if suffix in IMAGE_SUFFIXES:
        return {"Cache-Control": f"public, max-age={ONE_DAY}"}
    return {}


async def static_file(request: web.Request) -> web.StreamResponse:
    ctx = context_of(request)
    relative = request.match_info["path"]
    path = None
    if relative.startswith("templates/"):
        path = resolve_template(ctx.extras.get(TEMPLATE_DIRS, []), relative.removeprefix("templates/"))
    if path is None:
        path = resolve_static(ctx.extras[WEB_ROOT], web_directories(ctx), relative)
    if path is None and relative.startswith("templates/"):
        empty = EMPTY_TEMPLATE_FILES.get(relative.removeprefix("templates/"))
        if empty is not None and not ctx.extras.get(TEMPLATE_DIRS):
            return web.Response(text=json.dumps(empty), content_type="application/json")
    if path is None:
        raise web.HTTPNotFound()
    headers = _cache_headers(path)
    if path.suffix == ".js":
        headers["Content-Type"] = "application/javascript; charset=utf-8"
    return web.FileResponse(path, headers=headers)


def extension_scripts(web_root: Path, directories: dict[str, Path]) -> list[str]:
    """URL of every front-end extension script: the UI's own, then each registered web folder's."""
    scripts = ["/" + p for p in sorted(glob.glob("extensions/**/*.js", root_dir=web_root, recursive=True))]
    for name, folder in directories.items():
        for relative in sorted(glob.glob("**/*.js", root_dir=folder, recursive=True)):
            scripts.append(f"/extensions/{quote(name)}/{relative}")
    return scripts


@routes.get("/extensions")
async def extensions(request: web.Request) -> web.Response:
    ctx = context_of(request)
    directories = dict(web_directories(ctx))
    return json_response(await asyncio.to_thread(extension_scripts, ctx.extras[WEB_ROOT], directories))
