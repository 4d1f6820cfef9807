"""Routes that custom node packs add, served although they arrive after the app has started.

aiohttp freezes the app's router when the app starts, but packs load afterwards, in the
loader thread (so the server answers at once). The app's router therefore holds one
`CustomRoutes` resource, registered at start-up between the web UI's index and its static
catch-all (where ComfyUI's router has the packs' routes: after every built-in route, before the
static files). It resolves requests against a router of its own, which the loader fills once
the packs have imported — before `nodes_ready`, so by the time the server reports itself
ready every pack route answers.

Precedence is the app router's: a request is tried against every more specific built-in path
first (aiohttp looks routes up by path prefix, most specific first), then against the pack
routes, then against the static files. A method a pack route does not take adds to the 405's
Allow header, as in one router.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractView
from aiohttp.web_urldispatcher import AbstractResource, AbstractRoute, UrlMappingMatchInfo

log = logging.getLogger(__name__)

CUSTOM_ROUTES = "custom_routes"


class CustomRoutes(AbstractResource):
    """One resource of the app's router that stands for every route custom node packs add."""

    def __init__(self) -> None:
        super().__init__(name=None)
        self._router = web.UrlDispatcher()
        self._pending: list[tuple[list[web.AbstractRouteDef], bool]] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    # -- filling -------------------------------------------------------------------------

    def add(self, definitions: Iterable[web.AbstractRouteDef], api_twin: bool = False) -> None:
        """Add route definitions (from any thread); `api_twin` also serves each route under `/api`.

        Before `open()` they wait; afterwards they are registered on the event loop.
        """
        definitions = list(definitions)
        with self._lock:
            loop = self._loop
            if loop is None:
                self._pending.append((definitions, api_twin))
                return
        if threading.get_ident() == self._loop_thread:
            self._register(definitions, api_twin)
        else:
            loop.call_soon_threadsafe(self._register, definitions, api_twin)

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Register everything added so far and take later additions directly. Call on `loop`."""
        with self._lock:
            pending, self._pending = self._pending, []
            self._loop = loop
            self._loop_thread = threading.get_ident()
        for definitions, api_twin in pending:
            self._register(definitions, api_twin)

    def _register(self, definitions: list[web.AbstractRouteDef], api_twin: bool) -> None:
        for definition in definitions:
            twins: list[web.AbstractRouteDef] = []
            if api_twin and isinstance(definition, web.RouteDef):
                # ComfyUI registers the /api twins of its table first, then the table itself.
                twins.append(web.RouteDef(definition.method, "/api" + definition.path, definition.handler, definition.kwargs))
            for route_def in [*twins, definition]:
                try:
                    route_def.register(self._router)
                except Exception:
                    log.exception("a custom node route could not be added: %r", route_def)

    # -- the resource protocol -------------------------------------------------------------

    @property
    def canonical(self) -> str:
        # Indexed at "/": tried after every more specific built-in path.
        return "/"

    def url_for(self, **kwargs: str) -> Any:
        raise NotImplementedError("custom node routes are reached through their own resources")

    def add_prefix(self, prefix: str) -> None:
        raise RuntimeError("custom node routes cannot be mounted under a prefix")

    def get_info(self) -> dict[str, Any]:
        return {"custom_node_routes": len(self)}

    def raw_match(self, path: str) -> bool:
        return False

    def freeze(self) -> None:
        # The app freezing must not freeze our router: packs fill it later.
        pass

    async def resolve(self, request: web.Request) -> tuple[UrlMappingMatchInfo | None, set[str]]:
        match = await self._router.resolve(request)
        error = match.http_exception
        if error is None:
            return match, set()
        if isinstance(error, web.HTTPMethodNotAllowed):
            return None, set(error.allowed_methods)
        return None, set()

    def __len__(self) -> int:
        return len(self._router.routes())

    def __iter__(self) -> Iterator[AbstractRoute]:
        return iter(list(self._router.routes()))


def mount(app: web.Application) -> CustomRoutes:
    """Put a CustomRoutes resource into `app`'s router (now: routes registered later come after it)."""
    resource = CustomRoutes()
    app.router.register_resource(resource)
    return resource


class RouterProxy:
    """What a pack sees as `PromptServer.instance.app.router`: additions become pack routes."""

    def __init__(self, routes: CustomRoutes, router: web.UrlDispatcher) -> None:
        self._routes = routes
        self._router = router

    def add_route(self, method: str, path: str, handler: Any, **kwargs: Any) -> None:
        self._routes.add([web.RouteDef(method, path, handler, kwargs)])

    def add_get(self, path: str, handler: Any, **kwargs: Any) -> None:
        self.add_route("GET", path, handler, **kwargs)

    def add_post(self, path: str, handler: Any, **kwargs: Any) -> None:
        self.add_route("POST", path, handler, **kwargs)

    def add_put(self, path: str, handler: Any, **kwargs: Any) -> None:
        self.add_route("PUT", path, handler, **kwargs)

    def add_patch(self, path: str, handler: Any, **kwargs: Any) -> None:
        self.add_route("PATCH", path, handler, **kwargs)

    def add_delete(self, path: str, handler: Any, **kwargs: Any) -> None:
        self.add_route("DELETE", path, handler, **kwargs)

    def add_view(self, path: str, handler: type[AbstractView], **kwargs: Any) -> None:
        self.add_route("*", path, handler, **kwargs)

    def add_static(self, prefix: str, path: Any, **kwargs: Any) -> None:
        self._routes.add([web.StaticDef(prefix, path, kwargs)])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._router, name)


class AppProxy:
    """What a pack sees as `PromptServer.instance.app`: the running app, with route additions
    redirected to the pack routes (the real router is frozen by then)."""

    def __init__(self, app: web.Application, routes: CustomRoutes) -> None:
        self._app = app
        self._routes = routes
        self.router = RouterProxy(routes, app.router)

    def add_routes(self, routes: Iterable[web.AbstractRouteDef]) -> list[Any]:
        self._routes.add(routes)
        return []

    def __getitem__(self, key: Any) -> Any:
        return self._app[key]

    def __contains__(self, key: Any) -> bool:
        return key in self._app

    def get(self, key: Any, default: Any = None) -> Any:
        return self._app.get(key, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._app, name)
