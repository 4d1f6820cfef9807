"""`server.PromptServer` for custom nodes, and the pack routes mounted into a started app."""

from __future__ import annotations

import asyncio
import json
import struct
import threading
from types import SimpleNamespace
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from comfyserve.compat.server import BinaryEventTypes, PromptServer, run_on_prompt_handlers
from comfyserve.engine import progress
from comfyserve.server import custom_routes
from comfyserve.server.custom_routes import CUSTOM_ROUTES


class FakeHub:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []
        self.sockets: dict[str, Any] = {}

    def send(self, event: str, data: Any, sid: str | None = None) -> None:
        json.dumps(data)  # must be JSON, as the real hub encodes it
        self.sent.append(("json", event, data, sid))

    def send_bytes(self, event_type: int, payload: bytes, sid: str | None = None) -> None:
        self.sent.append(("bytes", event_type, payload, sid))


def fake_ctx(running: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(hub=FakeHub(), queue=SimpleNamespace(running=running or {}), extras={})


def test_instance_send_sync_and_frames():
    ctx = fake_ctx()
    server = PromptServer(ctx)
    assert PromptServer.instance is server
    server.send_sync("my.event", {"a": 1}, "client-1")
    server.send_sync("everyone", {"b": 2})
    server.send_sync(BinaryEventTypes.TEXT, b"raw")
    server.send_progress_text("working", "12", "client-1")
    assert ctx.hub.sent[:3] == [
        ("json", "my.event", {"a": 1}, "client-1"),
        ("json", "everyone", {"b": 2}, None),
        ("bytes", 3, b"raw", None),
    ]
    assert ctx.hub.sent[3] == ("bytes", 3, struct.pack(">I", 2) + b"12" + b"working", "client-1")


def test_unencoded_preview_is_encoded_as_a_preview_frame():
    ctx = fake_ctx()
    server = PromptServer(ctx)
    server.send_sync(BinaryEventTypes.UNENCODED_PREVIEW_IMAGE, ("PNG", Image.new("RGB", (40, 20)), 10), "c")
    kind, event, payload, sid = ctx.hub.sent[0]
    assert (kind, event, sid) == ("bytes", BinaryEventTypes.PREVIEW_IMAGE, "c")
    assert payload[:4] == struct.pack(">I", 2)  # PNG
    assert payload[4:12] == b"\x89PNG\r\n\x1a\n"


def test_send_sync_is_usable_from_another_thread():
    ctx = fake_ctx()
    server = PromptServer(ctx)
    worker = threading.Thread(target=server.send_sync, args=("from.worker", {"n": 1}, None))
    worker.start()
    worker.join()
    assert ctx.hub.sent == [("json", "from.worker", {"n": 1}, None)]


def test_running_prompt_state():
    item = SimpleNamespace(client_id="sub", prompt_id="p9")
    ctx = fake_ctx({"p9": item})
    server = PromptServer(ctx)
    assert server.client_id == "sub"
    assert server.last_prompt_id == "p9"
    assert server.last_node_id is None
    state = progress.ProgressState("p9", lambda e, d: None)
    progress.set_current(progress.ProgressReporter("p9", "4", state, lambda e, d: None))
    try:
        assert server.last_node_id == "4"
    finally:
        progress.set_current(None)
    assert PromptServer(fake_ctx()).client_id is None
    assert "custom_nodes_from_web" in server.supports


def test_on_prompt_handlers_run_in_order_and_failures_are_skipped():
    ctx = fake_ctx()
    server = PromptServer(ctx)
    server.add_on_prompt_handler(lambda body: {**body, "a": 1})

    def broken(body):
        raise RuntimeError("boom")

    server.add_on_prompt_handler(broken)
    server.add_on_prompt_handler(lambda body: {**body, "b": body["a"] + 1})
    assert server.trigger_on_prompt({}) == {"a": 1, "b": 2}
    assert ctx.extras["on_prompt_handlers"] is server.on_prompt_handlers
    assert run_on_prompt_handlers([lambda body: None], {"kept": True}) == {"kept": True}


# -- the pack routes resource ----------------------------------------------------------------


async def builtin(request: web.Request) -> web.Response:
    return web.Response(text="builtin")


async def static(request: web.Request) -> web.Response:
    return web.Response(text="static:" + request.match_info["path"])


def started_app() -> tuple[web.Application, custom_routes.CustomRoutes]:
    app = web.Application()
    app.router.add_get("/prompt", builtin)
    app.router.add_get("/", builtin)
    resource = custom_routes.mount(app)
    app.router.add_get("/{path:.*}", static)
    return app, resource


def test_routes_added_after_start_are_served_between_builtins_and_static():
    async def scenario() -> None:
        app, resource = started_app()
        ctx = SimpleNamespace(hub=FakeHub(), queue=SimpleNamespace(running={}), extras={CUSTOM_ROUTES: resource})
        async with TestClient(TestServer(app)) as client:
            assert app.router.frozen
            server = PromptServer(ctx, asyncio.get_running_loop(), app)

            @server.routes.get("/pack/hello")
            async def hello(request: web.Request) -> web.Response:
                return web.json_response({"app_is_ours": request.app is app})

            @server.routes.post("/prompt")
            async def shadowed(request: web.Request) -> web.Response:
                return web.Response(text="pack prompt")

            server.app.add_routes([web.get("/pack/direct", builtin)])  # before open: waits
            server.app.router.add_get("/pack/router", builtin)
            # Not served until the loader opens the resource (the static catch-all answers).
            assert await (await client.get("/pack/hello")).text() == "static:pack/hello"
            resource.add(server.routes, api_twin=True)
            resource.open(asyncio.get_running_loop())

            reply = await client.get("/pack/hello")
            assert await reply.json() == {"app_is_ours": True}
            assert (await (await client.get("/api/pack/hello")).json()) == {"app_is_ours": True}
            assert await (await client.get("/pack/direct")).text() == "builtin"
            assert await (await client.get("/pack/router")).text() == "builtin"
            assert (await client.get("/api/pack/direct")).status == 200  # static catch-all, not a twin
            assert await (await client.get("/api/pack/direct")).text() == "static:api/pack/direct"
            # Built-ins keep their paths; a pack method on the same path is added to them.
            assert await (await client.get("/prompt")).text() == "builtin"
            assert await (await client.post("/prompt")).text() == "pack prompt"
            assert (await client.head("/pack/hello")).status == 200
            wrong = await client.put("/pack/hello")
            assert wrong.status == 405
            assert set(wrong.headers["Allow"].split(",")) >= {"GET", "HEAD"}
            assert await (await client.get("/other/file.js")).text() == "static:other/file.js"
            assert await (await client.get("/")).text() == "builtin"

            # After open, additions (from any thread) are served too.
            await asyncio.to_thread(server.app.add_routes, [web.get("/pack/late", builtin)])
            await asyncio.sleep(0.05)
            assert (await client.get("/pack/late")).status == 200

    asyncio.run(scenario())


def test_an_invalid_pack_route_is_logged_and_the_rest_served(caplog):
    async def scenario() -> None:
        app, resource = started_app()
        async with TestClient(TestServer(app)) as client:
            resource.add([web.get("no-leading-slash", builtin), web.get("/fine", builtin)])
            resource.open(asyncio.get_running_loop())
            assert (await client.get("/fine")).status == 200
            assert len(resource) == 2  # GET + HEAD of /fine

    asyncio.run(scenario())
    assert "could not be added" in caplog.text
