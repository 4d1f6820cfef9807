"""`server` for custom nodes: `PromptServer.instance`, the handle packs use to reach the server.

The loader creates the instance before it imports packs, so module-level code of a pack can
decorate `PromptServer.instance.routes` (an aiohttp RouteTableDef). Those routes are added,
with their `/api` twins as ComfyUI adds them, once every pack has imported and before the
server reports ready. `send_sync` is thread-safe: nodes call it from the worker thread, and the
message joins the websocket hub's one ordered outbox.

Provided: `routes`, `app` (the running app; `add_routes` and `router.add_*` become pack routes),
`loop`, `client_id` (of the prompt running now), `last_node_id`, `last_prompt_id`, `sockets`,
`supports`, `web_root`, `send_sync`, `send`, `send_json`, `send_bytes`, `send_progress_text`,
`add_on_prompt_handler` / `trigger_on_prompt` (POST /prompt runs the handlers first), and
`BinaryEventTypes`. Not provided: `prompt_queue`, `user_manager`, adding middlewares.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import web

from comfyserve.engine import progress
from comfyserve.engine.previews import FORMAT_NUMBERS, encode_preview
from comfyserve.server.custom_routes import CUSTOM_ROUTES, AppProxy, CustomRoutes

if TYPE_CHECKING:
    from comfyserve.server.context import ServerContext

log = logging.getLogger(__name__)

ON_PROMPT_HANDLERS = "on_prompt_handlers"


class BinaryEventTypes:
    """Binary websocket frame types (the first 4 bytes of a frame)."""

    PREVIEW_IMAGE = 1
    UNENCODED_PREVIEW_IMAGE = 2
    TEXT = 3
    PREVIEW_IMAGE_WITH_METADATA = 4


class PromptServer:
    """The running server as ComfyUI's custom nodes know it."""

    instance: ClassVar[PromptServer | None] = None

    def __init__(
        self,
        ctx: ServerContext,
        loop: asyncio.AbstractEventLoop | None = None,
        app: web.Application | None = None,
    ) -> None:
        self.ctx = ctx
        self.loop = loop
        self.routes = web.RouteTableDef()
        self.supports = ["custom_nodes_from_web"]
        self.on_prompt_handlers: list[Callable[[dict[str, Any]], dict[str, Any]]] = ctx.extras.setdefault(
            ON_PROMPT_HANDLERS, []
        )
        self.custom_routes: CustomRoutes | None = ctx.extras.get(CUSTOM_ROUTES)
        self.app = AppProxy(app, self.custom_routes) if app is not None and self.custom_routes is not None else app
        PromptServer.instance = self

    # -- state of the running prompt -------------------------------------------------------

    @property
    def client_id(self) -> str | None:
        """The client id of the prompt running now (None when idle or when it has none)."""
        running = list(self.ctx.queue.running.values())
        return running[0].client_id if running else None

    @property
    def last_node_id(self) -> str | None:
        reporter = progress.current()
        return reporter.node_id if reporter is not None else None

    @property
    def last_prompt_id(self) -> str | None:
        reporter = progress.current()
        if reporter is not None:
            return reporter.prompt_id
        running = list(self.ctx.queue.running)
        return running[0] if running else None

    @property
    def sockets(self) -> dict[str, web.WebSocketResponse]:
        return self.ctx.hub.sockets

    @property
    def web_root(self) -> str | None:
        root = self.ctx.extras.get("web_root")
        return str(root) if root is not None else None

    # -- sending --------------------------------------------------------------------------

    def send_sync(self, event: str | int, data: Any, sid: str | None = None) -> None:
        """Send `{"type": event, "data": data}` to client `sid` (everyone when None); any thread.

        An int `event` sends a binary frame of `data` bytes; `UNENCODED_PREVIEW_IMAGE` takes
        `(format, PIL image, max size)` and sends it as an encoded preview frame.
        """
        hub = self.ctx.hub
        if event == BinaryEventTypes.UNENCODED_PREVIEW_IMAGE:
            encoded = encode_preview(data)
            if encoded is not None:
                media_type, image = encoded
                frame = struct.pack(">I", FORMAT_NUMBERS.get(media_type, 1)) + image
                hub.send_bytes(BinaryEventTypes.PREVIEW_IMAGE, frame, sid)
        elif isinstance(event, int):
            hub.send_bytes(event, bytes(data), sid)
        else:
            hub.send(event, data, sid)

    async def send(self, event: str | int, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    async def send_json(self, event: str, data: Any, sid: str | None = None) -> None:
        self.ctx.hub.send(event, data, sid)

    async def send_bytes(self, event: int, data: bytes, sid: str | None = None) -> None:
        self.ctx.hub.send_bytes(event, bytes(data), sid)

    def send_progress_text(self, text: str | bytes, node_id: str, sid: str | None = None) -> None:
        """A TEXT frame for the UI to show on node `node_id`: id length, id, then the text."""
        body = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        node = str(node_id).encode("utf-8")
        self.send_sync(BinaryEventTypes.TEXT, struct.pack(">I", len(node)) + node + body, sid)

    # -- prompt hooks ---------------------------------------------------------------------

    def add_on_prompt_handler(self, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Run `handler(body)` on every POST /prompt body before it is checked; it returns the body to use."""
        self.on_prompt_handlers.append(handler)

    def trigger_on_prompt(self, json_data: dict[str, Any]) -> dict[str, Any]:
        return run_on_prompt_handlers(self.on_prompt_handlers, json_data)


def run_on_prompt_handlers(handlers: list[Callable[[Any], Any]], body: Any) -> Any:
    """Pass `body` through each handler in turn; a handler that raises is logged and skipped."""
    for handler in list(handlers):
        try:
            changed = handler(body)
        except Exception:
            log.warning("an on_prompt handler of a custom node failed", exc_info=True)
            continue
        if changed is not None:
            body = changed
    return body
