"""File routes: `/upload/image`, `/upload/mask`, `/view`, `/view_metadata/{folder}`.

Same requests and answers as ComfyUI; where ComfyUI answers a 500 or silently writes nothing,
these answer a 4xx that says what was wrong. Every client path goes through `safe_join`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

from comfyserve.files.errors import FileRequestError
from comfyserve.files.form import read_upload_form
from comfyserve.files.imageview import needs_rendition, render
from comfyserve.files.mask import apply_mask
from comfyserve.files.original_ref import original_path
from comfyserve.files.safetensors_meta import read_metadata
from comfyserve.files.target import UploadTarget, upload_target
from comfyserve.files.uploads import Blob, store_upload
from comfyserve.files.view_headers import NOSNIFF, view_content_type, view_headers
from comfyserve.files.view_path import view_path
from comfyserve.server.context import context_of
from comfyserve.server.responses import error_response, json_response

routes = web.RouteTableDef()

T = TypeVar("T")


def _refusal(exc: FileRequestError, headers: dict[str, str] | None = None) -> web.Response:
    if exc.bare:
        return web.Response(status=exc.status, headers=headers)
    response = error_response(exc.kind, exc.message, status=exc.status)
    response.headers.update(headers or {})
    return response


async def _in_thread(fn: Callable[..., T], *args: object) -> T:
    """Run disk- or CPU-heavy work (hashing, image coding) off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))


def _write_failure(exc: OSError, target: UploadTarget) -> FileRequestError:
    where = f"{target.kind}/{target.subfolder}".rstrip("/")
    if isinstance(exc, IsADirectoryError):
        return FileRequestError(409, "name_taken", f"A folder named {target.filename!r} already exists in {where}.")
    if isinstance(exc, NotADirectoryError):
        return FileRequestError(409, "name_taken", f"Cannot create {where}: a file stands where a folder is needed.")
    return FileRequestError(500, "write_failed", f"Could not save the upload in {where}: {exc.strerror or exc}.")


async def _save(target: UploadTarget, blob: Blob) -> web.Response:
    try:
        name = await _in_thread(store_upload, target.directory, target.filename, blob, target.overwrite)
    except OSError as exc:
        raise _write_failure(exc, target) from exc
    return json_response({"name": name, "subfolder": target.subfolder, "type": target.kind})


@routes.post("/upload/image")
async def upload_image(request: web.Request) -> web.Response:
    ctx = context_of(request)
    try:
        form = await read_upload_form(request, ctx.settings.max_upload_size)
    except FileRequestError as exc:
        return _refusal(exc)
    try:
        return await _save(upload_target(ctx.folders, form.fields, form.filename), form.blob)
    except FileRequestError as exc:
        return _refusal(exc)
    finally:
        form.close()


@routes.post("/upload/mask")
async def upload_mask(request: web.Request) -> web.Response:
    """Save the original image (from `original_ref`) with the uploaded mask's alpha channel."""
    ctx = context_of(request)
    try:
        form = await read_upload_form(request, ctx.settings.max_upload_size)
    except FileRequestError as exc:
        return _refusal(exc)
    try:
        target = upload_target(ctx.folders, form.fields, form.filename)
        original = original_path(ctx.folders, form.fields.get("original_ref"))
        merged = await _in_thread(apply_mask, original, form.blob.file)
        return await _save(target, Blob.from_bytes(merged))
    except FileRequestError as exc:
        return _refusal(exc)
    finally:
        form.close()


@routes.get("/view")
async def view(request: web.Request) -> web.StreamResponse:
    """A stored file, as is (Range supported) or re-encoded by `preview` / `channel`."""
    query = request.rel_url.query
    try:
        path, name = view_path(context_of(request).folders, query)
        preview, channel = query.get("preview"), query.get("channel")
        if needs_rendition(preview, channel):
            rendition = await _in_thread(render, path, preview, channel)
            return web.Response(body=rendition.body, headers=view_headers(name, rendition.content_type))
    except FileRequestError as exc:
        return _refusal(exc, NOSNIFF)
    return web.FileResponse(path, headers=view_headers(name, view_content_type(name)))


@routes.get("/view_metadata/{folder_name}")
async def view_metadata(request: web.Request) -> web.Response:
    """The `__metadata__` of a model's safetensors header; 404 (empty) when there is none."""
    filename = request.rel_url.query.get("filename", "")
    if not filename.endswith(".safetensors"):
        return web.Response(status=404)
    path = context_of(request).folders.full_path(request.match_info["folder_name"], filename)
    if path is None:
        return web.Response(status=404)
    try:
        metadata = await _in_thread(read_metadata, path)
    except FileRequestError as exc:
        return _refusal(exc)
    except FileNotFoundError:
        return web.Response(status=404)
    if metadata is None:
        return web.Response(status=404)
    return json_response(metadata)
