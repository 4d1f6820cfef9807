"""The objects every route handler shares, stored on the aiohttp app under one key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from comfyserve.config import Settings
from comfyserve.engine.registry import NodeRegistry
from comfyserve.paths import Folders

if TYPE_CHECKING:
    from comfyserve.queue import PromptQueue
    from comfyserve.server.hub import WebSocketHub


@dataclass
class ServerContext:
    """Settings, folders, node registry, queue and websocket hub of one running server."""

    settings: Settings
    folders: Folders
    registry: NodeRegistry
    hub: WebSocketHub
    queue: PromptQueue
    # Filled by route modules that keep state of their own (user manager, …).
    extras: dict[str, Any] = field(default_factory=dict)


CONTEXT = web.AppKey("comfyserve_context", ServerContext)


def context_of(request: web.Request) -> ServerContext:
    """The ServerContext of the app serving `request`."""
    return request.app[CONTEXT]
