"""`/ws`: the websocket every client listens on for status and execution events."""

from __future__ import annotations

import json
import logging
import uuid

from aiohttp import WSMsgType, web

from comfyserve.server.context import context_of
from comfyserve.server.features import feature_flags

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


@routes.get("/ws")
async def websocket(request: web.Request) -> web.StreamResponse:
    ctx = context_of(request)
    ws = web.WebSocketResponse(max_msg_size=ctx.settings.max_upload_size)
    if not ws.can_prepare(request).ok:
        return web.Response(
            status=400, text='No WebSocket UPGRADE hdr: None\n Can "Upgrade" only to "WebSocket".'
        )
    await ws.prepare(request)
    sid = request.query.get("clientId") or uuid.uuid4().hex
    hub, queue = ctx.hub, ctx.queue
    hub.add(sid, ws)
    try:
        hub.send("status", queue.status_payload(sid), sid)
        running = next(iter(queue.running.values()), None)
        if running is not None and running.client_id == sid and queue.current_node is not None:
            hub.send("executing", {"node": queue.current_node}, sid)
        first = True
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                if first:
                    _maybe_feature_flags(ctx, sid, message.data)
                first = False
            elif message.type == WSMsgType.ERROR:
                log.debug("websocket %s closed with %s", sid, ws.exception())
    finally:
        hub.remove(sid, ws)
    return ws


def _maybe_feature_flags(ctx, sid: str, text: str) -> None:
    """Answer a first `feature_flags` message with ours; anything else is ignored."""
    try:
        message = json.loads(text)
    except ValueError:
        return
    if isinstance(message, dict) and message.get("type") == "feature_flags":
        data = message.get("data")
        ctx.hub.client_features[sid] = data if isinstance(data, dict) else {}
        ctx.hub.send("feature_flags", feature_flags(ctx.settings), sid)
