"""Loading node classes into the registry, off the start-up path.

Importing torch and the node modules takes seconds; the server starts answering first and
loads nodes in a thread. Routes that need the registry await `ctx.extras["nodes_ready"]`.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from comfyserve.server.context import ServerContext

log = logging.getLogger(__name__)

BUILTIN_NODE_MODULE = "nodes"


def load_builtin_nodes(ctx: ServerContext) -> None:
    """Import the built-in `nodes` package and register its NODE_CLASS_MAPPINGS."""
    started = time.perf_counter()
    module = importlib.import_module(BUILTIN_NODE_MODULE)
    ctx.registry.register_mappings(
        getattr(module, "NODE_CLASS_MAPPINGS", {}),
        getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", {}),
        python_module="nodes",
    )
    log.info("loaded %d built-in nodes in %.2f s", len(ctx.registry.entries), time.perf_counter() - started)


def start_loading(ctx: ServerContext) -> asyncio.Task:
    """Begin loading nodes in a thread; `ctx.extras["nodes_ready"]` is set when done."""
    ready = asyncio.Event()
    ctx.extras["nodes_ready"] = ready

    async def load() -> None:
        try:
            await asyncio.to_thread(load_builtin_nodes, ctx)
        except Exception:
            log.exception("built-in nodes failed to load")
        finally:
            ready.set()
        ctx.queue.start_worker(ctx)

    return asyncio.get_running_loop().create_task(load())


async def nodes_ready(ctx: ServerContext) -> None:
    """Wait until node classes are registered (returns at once after start-up)."""
    ready = ctx.extras.get("nodes_ready")
    if ready is not None and not ready.is_set():
        await ready.wait()
