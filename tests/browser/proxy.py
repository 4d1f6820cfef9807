"""A minimal reverse proxy that serves a comfyserve process under a sub-path (`/comfy/`), the way
nginx does with `location /comfy/ { proxy_pass http://backend/; proxy_set_header Host $host; … }`:
the prefix is stripped, the browser's Host header passed on, websockets relayed."""

from __future__ import annotations

import asyncio
import threading

import aiohttp
from aiohttp import web

from tests.serverproc import free_port

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "content-length", "content-encoding"}


class SubPathProxy:
    def __init__(self, backend: str, prefix: str = "/comfy") -> None:
        self.backend = backend.rstrip("/")
        self.prefix = prefix
        self.port = free_port()
        self.paths: list[str] = []  # every path the browser asked the proxy for
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}/"

    def start(self) -> SubPathProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", self.prefix + "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.path_qs)
        target = self.backend + request.path_qs[len(self.prefix):]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._relay_websocket(request, target, headers)
        assert self._session is not None
        async with self._session.request(
            request.method, target, headers=headers, data=await request.read(), allow_redirects=False
        ) as upstream:
            body = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            if upstream.headers.get("Content-Encoding"):
                out["Content-Encoding"] = upstream.headers["Content-Encoding"]
            return web.Response(status=upstream.status, body=body, headers=out)

    async def _relay_websocket(self, request: web.Request, target: str, headers: dict) -> web.StreamResponse:
        assert self._session is not None
        downstream = web.WebSocketResponse()
        await downstream.prepare(request)
        skip = {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions"}
        upstream_headers = {k: v for k, v in headers.items() if k.lower() not in skip}
        async with self._session.ws_connect(target.replace("http", "ws", 1), headers=upstream_headers) as upstream:

            async def pump(source, sink) -> None:
                async for message in source:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        await sink.send_str(message.data)
                    elif message.type == aiohttp.WSMsgType.BINARY:
                        await sink.send_bytes(message.data)
                    else:
                        break

            tasks = [asyncio.ensure_future(pump(upstream, downstream)), asyncio.ensure_future(pump(downstream, upstream))]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
        await downstream.close()
        return downstream
