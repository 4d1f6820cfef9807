"""Read-only routes about the server: system stats, node definitions, model folders, custom node
assets, and the web UI's `/internal/*` helpers (logs, folder paths, file listings)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from comfyserve import logbuffer, nodepack_files, sysinfo
from comfyserve.engine.loader import ON_NODES_LOADED, nodes_ready
from comfyserve.paths import HIDDEN_MODEL_FOLDERS, MODEL_EXTENSIONS, Folders
from comfyserve.server.context import ServerContext, context_of
from comfyserve.server.features import feature_flags
from comfyserve.server.hub import WebSocketHub
from comfyserve.server.responses import BadJson, bad_json_response, error_response, json_response, read_json

routes = web.RouteTableDef()
api_only_routes = web.RouteTableDef()
internal_routes = web.RouteTableDef()

LOG_BUFFER = "log_buffer"


def setup(app: web.Application, ctx: ServerContext) -> None:
    """Keep log lines for `/internal/logs` (pushed to subscribed websockets); warm /object_info."""
    buffer = logbuffer.install()
    buffer.set_sink(_websocket_sink(ctx.hub))
    ctx.extras[LOG_BUFFER] = buffer
    # Build /object_info once the nodes are in, so the first client (the web UI's first load)
    # gets the cached bytes instead of paying for lazy imports such as the sampler list.
    ctx.extras.setdefault(ON_NODES_LOADED, []).append(
        lambda: ctx.registry.object_info_bytes(lambda: listing_stamp(ctx.folders))
    )


def _websocket_sink(hub: WebSocketHub) -> logbuffer.Sink:
    def push(entries: list[logbuffer.LogEntry], client_id: str) -> None:
        ws = hub.sockets.get(client_id)
        if ws is not None and not ws.closed:
            hub.send("logs", {"entries": entries, "size": logbuffer.terminal_size()}, client_id)

    return push


def _custom_node_roots(folders: Folders) -> list[Path]:
    folder = folders.model_folder("custom_nodes")
    return list(folder.paths) if folder else []


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def listing_stamp(folders: Folders) -> tuple[tuple[str, int], ...]:
    """Cheap fingerprint of every folder node inputs list files from (input dir, model folders).

    Adding or removing a file changes its folder's mtime, so `/object_info` is rebuilt then.
    """
    roots = [folders.input, *(p for f in folders.model_folders.values() for p in f.paths)]
    return tuple((str(p), _mtime(p)) for p in roots)


# -- system ------------------------------------------------------------------------------


@routes.get("/system_stats")
async def system_stats(request: web.Request) -> web.Response:
    settings = context_of(request).settings

    def collect() -> dict[str, Any]:
        return sysinfo.system_stats(settings, sysinfo.load_torch(settings.cpu))

    return json_response(await asyncio.to_thread(collect))


@routes.get("/features")
async def features(request: web.Request) -> web.Response:
    return json_response(feature_flags(context_of(request).settings))


# -- node definitions --------------------------------------------------------------------


@routes.get("/object_info")
async def object_info(request: web.Request) -> web.Response:
    ctx = context_of(request)
    await nodes_ready(ctx)
    body = await asyncio.to_thread(ctx.registry.object_info_bytes, lambda: listing_stamp(ctx.folders))
    return web.Response(body=body, content_type="application/json", charset="utf-8")


@routes.get("/object_info/{node_class}")
async def object_info_node(request: web.Request) -> web.Response:
    ctx = context_of(request)
    await nodes_ready(ctx)
    name = request.match_info["node_class"]
    if name not in ctx.registry:
        return json_response({})
    return json_response({name: await asyncio.to_thread(ctx.registry.node_info, name)})


# -- model folders -----------------------------------------------------------------------


@routes.get("/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    names = context_of(request).folders.filename_list("embeddings")
    return json_response([os.path.splitext(name)[0] for name in names])


@routes.get("/models")
async def model_folder_names(request: web.Request) -> web.Response:
    return json_response(list(context_of(request).folders.model_folders))


@routes.get("/models/{folder}")
async def model_files(request: web.Request) -> web.Response:
    folders = context_of(request).folders
    name = request.match_info["folder"]
    if name not in folders.model_folders:
        return web.Response(status=404)
    return json_response(await asyncio.to_thread(folders.filename_list, name))


@routes.get("/experiment/models")
async def experiment_model_folders(request: web.Request) -> web.Response:
    folders = context_of(request).folders
    return json_response(
        [
            {"name": name, "folders": [str(p) for p in folder.paths]}
            for name, folder in folders.model_folders.items()
            if name not in HIDDEN_MODEL_FOLDERS
        ]
    )


def model_file_details(paths: list[Path]) -> list[dict[str, Any]]:
    """Every model file under `paths`: relative name, index of its root, times and size."""
    found: list[dict[str, Any]] = []
    for index, root in enumerate(paths):
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                if filename.startswith(".") or os.path.splitext(filename)[1].lower() not in MODEL_EXTENSIONS:
                    continue
                full = os.path.join(dirpath, filename)
                try:
                    stat = os.stat(full)
                except OSError:
                    continue
                found.append(
                    {
                        "name": os.path.relpath(full, root).replace(os.sep, "/"),
                        "pathIndex": index,
                        "modified": stat.st_mtime,
                        "created": stat.st_ctime,
                        "size": stat.st_size,
                    }
                )
    return found


@routes.get("/experiment/models/{folder}")
async def experiment_model_files(request: web.Request) -> web.Response:
    folder = context_of(request).folders.model_folders.get(request.match_info["folder"])
    if folder is None:
        return web.Response(status=404)
    return json_response(await asyncio.to_thread(model_file_details, list(folder.paths)))


# -- custom node assets ------------------------------------------------------------------


@routes.get("/i18n")
async def i18n(request: web.Request) -> web.Response:
    roots = _custom_node_roots(context_of(request).folders)
    return json_response(await asyncio.to_thread(nodepack_files.translations, roots))


@routes.get("/workflow_templates")
async def workflow_templates(request: web.Request) -> web.Response:
    roots = _custom_node_roots(context_of(request).folders)
    return json_response(await asyncio.to_thread(nodepack_files.workflow_templates, roots))


@api_only_routes.get("/api/workflow_templates/{pack}/{filename:.+}")
async def workflow_template_file(request: web.Request) -> web.StreamResponse:
    roots = _custom_node_roots(context_of(request).folders)
    path = await asyncio.to_thread(
        nodepack_files.workflow_template_file, roots, request.match_info["pack"], request.match_info["filename"]
    )
    if path is None:
        raise web.HTTPNotFound()
    return web.FileResponse(path)


@routes.get("/global_subgraphs")
async def global_subgraphs(request: web.Request) -> web.Response:
    roots = _custom_node_roots(context_of(request).folders)
    return json_response(await asyncio.to_thread(nodepack_files.global_subgraphs, roots))


@routes.get("/global_subgraphs/{id}")
async def global_subgraph(request: web.Request) -> web.Response:
    roots = _custom_node_roots(context_of(request).folders)
    return json_response(await asyncio.to_thread(nodepack_files.global_subgraph, roots, request.match_info["id"]))


# -- /internal ---------------------------------------------------------------------------


def _log_buffer(request: web.Request) -> logbuffer.LogBuffer:
    return context_of(request).extras[LOG_BUFFER]


@internal_routes.get("/internal/logs")
async def logs(request: web.Request) -> web.Response:
    return json_response(_log_buffer(request).text())


@internal_routes.get("/internal/logs/raw")
async def logs_raw(request: web.Request) -> web.Response:
    return json_response(_log_buffer(request).raw())


class LogSubscription(BaseModel):
    """`PATCH /internal/logs/subscribe` body."""

    clientId: str = Field(min_length=1)
    enabled: bool


@internal_routes.patch("/internal/logs/subscribe")
async def logs_subscribe(request: web.Request) -> web.Response:
    try:
        body = LogSubscription.model_validate(await read_json(request))
    except BadJson as exc:
        return bad_json_response(exc)
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return error_response("invalid_subscription", "Expected {\"clientId\": str, \"enabled\": bool}", details)
    _log_buffer(request).subscribe(body.clientId, body.enabled)
    return web.Response()


@internal_routes.get("/internal/folder_paths")
async def folder_paths(request: web.Request) -> web.Response:
    folders = context_of(request).folders
    return json_response({name: [str(p) for p in f.paths] for name, f in folders.model_folders.items()})


def files_newest_first(directory: Path) -> list[str]:
    """Names of the plain files directly in `directory`, most recently modified first."""
    try:
        entries = [e for e in os.scandir(directory) if e.is_file()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    dated: list[tuple[float, str]] = []
    for entry in entries:
        try:
            dated.append((entry.stat().st_mtime, entry.name))
        except OSError:  # removed while listing
            continue
    return [name for _, name in sorted(dated, key=lambda d: d[0], reverse=True)]


@internal_routes.get("/internal/files/{directory_type}")
async def internal_files(request: web.Request) -> web.Response:
    directory = context_of(request).folders.directory_by_type(request.match_info["directory_type"])
    if directory is None:
        return json_response({"error": "Invalid directory type"}, status=400)
    return json_response(await asyncio.to_thread(files_newest_first, directory))


@internal_routes.route("*", "/internal/{tail:.*}")
async def internal_not_found(request: web.Request) -> web.Response:
    """Unknown `/internal/…` paths: a plain-text 404, whatever the method."""
    raise web.HTTPNotFound()
