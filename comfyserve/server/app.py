"""The aiohttp application factory and the process entry that serves it."""

from __future__ import annotations

import asyncio
import importlib
import logging
import ssl

from aiohttp import web

from comfyserve import runtime
from comfyserve.config import Settings
from comfyserve.engine.loader import start_loading
from comfyserve.engine.registry import NodeRegistry
from comfyserve.paths import Folders
from comfyserve.queue import PromptQueue
from comfyserve.server.context import CONTEXT, ServerContext
from comfyserve.server.hub import WebSocketHub
from comfyserve.server.middleware import build_middlewares
from comfyserve.server.routes import ROUTE_MODULES
from comfyserve.store import Store

log = logging.getLogger("comfyserve")


def _add_table(app: web.Application, table: web.RouteTableDef, prefix: str = "") -> None:
    for route in table:
        if isinstance(route, web.RouteDef):
            # register() adds GET routes with HEAD too, as ComfyUI's router does.
            web.RouteDef(route.method, prefix + route.path, route.handler, route.kwargs).register(app.router)


def create_app(settings: Settings, registry: NodeRegistry | None = None) -> web.Application:
    """Build the app: folders, store, queue, hub, every route family twice (`/x` and `/api/x`)."""
    folders = Folders.from_settings(settings)
    folders.ensure()
    runtime.install(settings, folders)
    store = Store(folders.user / "comfyserve.sqlite3")
    hub = WebSocketHub()
    registry = registry if registry is not None else NodeRegistry()
    queue = PromptQueue(store=store, hub=hub, max_history=settings.max_history)
    ctx = ServerContext(settings=settings, folders=folders, registry=registry, hub=hub, queue=queue)

    app = web.Application(
        middlewares=build_middlewares(settings),
        client_max_size=settings.max_upload_size + 1024 * 1024,
    )
    app[CONTEXT] = ctx
    for module_name in ROUTE_MODULES:
        module = importlib.import_module(module_name)
        if hasattr(module, "setup"):
            module.setup(app, ctx)
        if hasattr(module, "routes"):
            _add_table(app, module.routes)
            _add_table(app, module.routes, "/api")
        if hasattr(module, "api_only_routes"):
            _add_table(app, module.api_only_routes)
        if hasattr(module, "internal_routes"):
            _add_table(app, module.internal_routes)
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    return app


async def _on_startup(app: web.Application) -> None:
    ctx = app[CONTEXT]
    ctx.hub.attach_loop(asyncio.get_running_loop())
    ctx.extras["loader_task"] = start_loading(ctx, app)


async def _on_shutdown(app: web.Application) -> None:
    ctx = app[CONTEXT]
    await ctx.hub.close_all()
    ctx.queue.stop_worker()


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not (settings.tls_keyfile and settings.tls_certfile):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile=str(settings.tls_certfile), keyfile=str(settings.tls_keyfile))
    return context


def serve(settings: Settings, exit_after_start: bool = False) -> None:
    """Run the server until interrupted (or, with `exit_after_start`, until nodes have loaded)."""
    app = create_app(settings)
    tls = ssl_context(settings)
    scheme = "https" if tls else "http"
    hosts = settings.listen
    if not settings.dont_print_server:
        for host in hosts:
            shown = f"[{host}]" if ":" in host else host
            shown = "127.0.0.1" if host in ("0.0.0.0", "::") else shown
            log.info("To see the GUI go to: %s://%s:%d", scheme, shown, settings.port)
    if exit_after_start:
        app.on_startup.append(_exit_when_loaded)
    web.run_app(
        app,
        host=hosts,
        port=settings.port,
        ssl_context=tls,
        print=None,
        access_log=None,
        handle_signals=True,
    )


def _graceful_exit() -> None:
    # Raised from a plain loop callback, as aiohttp's own signal handler does, so run_app
    # shuts down cleanly.
    raise web.GracefulExit()


async def _exit_when_loaded(app: web.Application) -> None:
    # --quick-test-for-ci: prove start-up works (nodes import), then stop as on Ctrl-C.
    async def stop_after_load() -> None:
        await app[CONTEXT].extras["loader_task"]
        log.info("start-up complete; exiting (--quick-test-for-ci)")
        asyncio.get_running_loop().call_soon(_graceful_exit)

    app[CONTEXT].extras["quick_test"] = asyncio.get_running_loop().create_task(stop_after_load())
