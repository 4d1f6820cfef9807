"""Middlewares: browser-origin and Host checks, CORS, ComfyUI's 404/OPTIONS shapes, safety net.

ComfyUI's security advisories, replayed: a page on another site must not drive this server
through the user's browser (Origin / Sec-Fetch-Site checks), and a DNS-rebound name must not
reach a server bound to loopback (Host check).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from comfyserve.config import Settings
from comfyserve.server.responses import error_response

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CORS_METHODS = "POST, GET, DELETE, PUT, OPTIONS, PATCH"
CORS_HEADERS = "Content-Type, Authorization, Comfy-User"


def _host_name(host_header: str) -> str:
    """`name` from `name:port` / `[v6]:port`, lower-cased."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


@functools.lru_cache(maxsize=256)
def _is_loopback_name(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _bound_to_loopback_only(settings: Settings) -> bool:
    return all(_is_loopback_name(h) for h in settings.listen)


def _origin_matches_host(origin: str, host: str) -> bool:
    parsed = urlsplit(origin)
    if not parsed.scheme or not parsed.netloc:
        return False
    return parsed.netloc.lower() == host.strip().lower()


def build_middlewares(settings: Settings) -> list:
    """The middleware chain for `settings`, outermost first."""
    loopback_only = _bound_to_loopback_only(settings)
    own_names = {_host_name(h) for h in settings.listen} | {n.lower() for n in settings.allowed_hosts}
    cors_origin = settings.enable_cors_header

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        if loopback_only and host is not None:
            name = _host_name(host)
            if not (_is_loopback_name(name) or name in own_names):
                log.warning("refused a request for Host %r (not this server's name)", host)
                return web.Response(status=403)
        if cors_origin is None:
            origin = request.headers.get("Origin")
            fetch_site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
            if fetch_site == "cross-site":
                return web.Response(status=403)
            if origin is not None and host is not None and (
                origin.strip().lower() == "null" or not _origin_matches_host(origin, host)
            ):
                log.warning("refused a cross-origin request from %r for Host %r", origin, host)
                return web.Response(status=403)
        if request.method == "OPTIONS":
            response: web.StreamResponse = web.Response()
        else:
            response = await handler(request)
        if cors_origin is not None:
            response.headers["Access-Control-Allow-Origin"] = cors_origin
            response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
            response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
            response.headers["Access-Control-Allow-Credentials"] = "true"
        return response

    @web.middleware
    async def shapes(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPNotFound as exc:
            if exc.text and exc.text != "404: Not Found":
                raise
            if request.path.startswith("/internal/"):
                raise
            # ComfyUI's static fallback answers unknown paths with an empty octet-stream 404.
            return web.Response(status=404, content_type="application/octet-stream")
        except web.HTTPException:
            raise
        except Exception as exc:  # a bug of ours: answer in ComfyUI's envelope, keep serving
            log.exception("unhandled error on %s %s", request.method, request.path)
            return error_response(
                "server_error", "Internal server error", f"{type(exc).__name__}: {exc}", status=500
            )

    chain = [guard, shapes]
    if getattr(settings, "enable_compress_response_body", False):

        @web.middleware
        async def compress(request: web.Request, handler: Handler) -> web.StreamResponse:
            response = await handler(request)
            if isinstance(response, web.Response) and response.content_type in (
                "application/json",
                "text/plain",
                "text/html",
                "application/javascript",
                "text/css",
            ):
                response.enable_compression()
            return response

        chain.append(compress)
    return chain
