"""Loading node classes into the registry, off the start-up path.

Importing torch and the node modules takes seconds; the server starts answering first and
loads nodes in a thread: the built-in `nodes` package, then the custom node packs
(`custom_nodes.load_custom_nodes`, after the ComfyUI module aliases are installed and
`server.PromptServer.instance` exists). Back on the event loop the packs' routes are added,
then `ctx.extras["nodes_ready"]` is set; routes that need the registry await it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from comfyserve.server.custom_routes import CUSTOM_ROUTES

if TYPE_CHECKING:
    from comfyserve.server.context import ServerContext

log = logging.getLogger(__name__)

BUILTIN_NODE_MODULE = "nodes"
# ctx.extras key: callables run (in a thread) once the nodes are loaded, e.g. warming caches.
ON_NODES_LOADED = "on_nodes_loaded"


def load_builtin_nodes(ctx: ServerContext) -> None:
    """Import the built-in `nodes` package and register its NODE_CLASS_MAPPINGS."""
    started = time.perf_counter()
    module = importlib.import_module(BUILTIN_NODE_MODULE)
    from comfyserve.models.cache import unload_models

    # POST /free and the out-of-memory handler drop the cached models through this (worker.py).
    ctx.extras.setdefault("unload_models", unload_models)
    ctx.registry.register_mappings(
        getattr(module, "NODE_CLASS_MAPPINGS", {}),
        getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", {}),
        python_module="nodes",
    )
    log.info("loaded %d built-in nodes in %.2f s", len(ctx.registry.entries), time.perf_counter() - started)


def prepare_custom_nodes(ctx: ServerContext, app: web.Application | None) -> Any:
    """Install the ComfyUI module aliases and create `PromptServer.instance` (on the event loop)."""
    from comfyserve import compat
    from comfyserve.compat.server import PromptServer

    compat.install()
    return PromptServer(ctx, asyncio.get_running_loop(), app)


def load_all_nodes(ctx: ServerContext, with_custom_nodes: bool = True) -> None:
    """Built-in nodes, then the custom node packs; one failing never stops the other. Loader thread."""
    try:
        load_builtin_nodes(ctx)
    except Exception:
        log.exception("built-in nodes failed to load")
    if not with_custom_nodes:
        return
    from comfyserve.engine.custom_nodes import load_custom_nodes

    try:
        load_custom_nodes(ctx)
    except Exception:
        log.exception("custom node packs failed to load")


def add_custom_routes(ctx: ServerContext, prompt_server: Any) -> None:
    """Serve the routes packs declared on `PromptServer.instance.routes` (with `/api` twins)."""
    resource = ctx.extras.get(CUSTOM_ROUTES)
    if resource is None:
        return
    resource.add(prompt_server.routes, api_twin=True)
    resource.open(asyncio.get_running_loop())


def start_loading(ctx: ServerContext, app: web.Application | None = None) -> asyncio.Task:
    """Begin loading nodes in a thread; `ctx.extras["nodes_ready"]` is set when done."""
    ready = asyncio.Event()
    ctx.extras["nodes_ready"] = ready

    async def load() -> None:
        try:
            try:
                prompt_server = prepare_custom_nodes(ctx, app)
            except Exception:
                log.exception("custom node support failed to start; no custom node packs are loaded")
                prompt_server = None
            await asyncio.to_thread(load_all_nodes, ctx, prompt_server is not None)
            if prompt_server is not None:
                add_custom_routes(ctx, prompt_server)
        except Exception:
            log.exception("nodes failed to load")
        finally:
            ready.set()
        ctx.queue.start_worker(ctx)
        for hook in ctx.extras.get(ON_NODES_LOADED, []):
            try:
                await asyncio.to_thread(hook)
            except Exception:
                log.exception("a start-up task after loading the nodes failed")

    return asyncio.get_running_loop().create_task(load())


async def nodes_ready(ctx: ServerContext) -> None:
    """Wait until node classes are registered (returns at once after start-up)."""
    ready = ctx.extras.get("nodes_ready")
    if ready is not None and not ready.is_set():
        await ready.wait()
