"""`/users`, `/settings`, `/userdata`, `/v2/userdata`: users, their UI settings and their files.

Answers match ComfyUI's (plain-text errors on the userdata routes, empty 403/404 on
`/userdata/{file}`); where ComfyUI fails with a 500 (bad JSON, unknown user, a folder where a
file is expected) these answer a 4xx that says what is wrong.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from comfyserve.paths import PathEscape
from comfyserve.server.context import ServerContext, context_of
from comfyserve.server.responses import BadJson, bad_json_response, error_response, json_response, read_json
from comfyserve.userdata.atomic import AtomicFile, make_parent, place
from comfyserve.userdata.delivery import delivery_headers
from comfyserve.userdata.files import file_info, listed_files, listing_entry, relative, tree, user_path
from comfyserve.userdata.settings_file import load_settings, save_settings
from comfyserve.userdata.users import DEFAULT_USER, InvalidUsername, UnknownUser, UserManager

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

USERS_KEY = "users"
_CHUNK = 256 * 1024

UserHandler = Callable[[web.Request, Path], Awaitable[web.StreamResponse]]


def setup(app: web.Application, ctx: ServerContext) -> None:
    """Create the user registry; in single-user mode the `default` user's folder exists from the start."""
    manager = UserManager(ctx.folders.user, ctx.settings.multi_user)
    if not manager.multi_user:
        manager.user_dir(DEFAULT_USER).mkdir(parents=True, exist_ok=True)
    ctx.extras[USERS_KEY] = manager


def users_of(request: web.Request) -> UserManager:
    return context_of(request).extras[USERS_KEY]


def per_user(handler: UserHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Call `handler(request, user_folder)` for the request's user; 400 when the user is unknown."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        manager = users_of(request)
        try:
            folder = manager.user_dir(manager.request_user(request.headers))
        except UnknownUser as exc:
            return error_response("unknown_user", "Unknown user", str(exc))
        return await handler(request, folder)

    return wrapped


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() == "true"


def _overwrite(request: web.Request) -> bool:
    return request.query.get("overwrite", "true").lower() != "false"


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text)


def _saved(path: Path, folder: Path, full_info: bool) -> web.Response:
    """What POST and move answer: the path relative to the user folder, or its FileInfo."""
    return json_response(file_info(path, folder) if full_info else relative(path, folder))


def _cannot_write(path: Path, folder: Path, exc: OSError) -> web.Response:
    reason = exc.strerror or str(exc)
    return _text(400, f"Cannot write '{relative(path, folder)}': {reason}.")


# --- users ---------------------------------------------------------------------------------


@routes.get("/users")
async def get_users(request: web.Request) -> web.Response:
    manager = users_of(request)
    if manager.multi_user:
        return json_response({"storage": "server", "users": manager.users})
    return json_response({"storage": "server", "migrated": manager.user_dir(DEFAULT_USER).exists()})


@routes.post("/users")
async def post_users(request: web.Request) -> web.Response:
    try:
        body = await read_json(request)
    except BadJson as exc:
        return json_response({"error": str(exc)}, status=400)
    username = body.get("username")
    if not isinstance(username, str):
        return json_response({"error": 'username not provided: send {"username": "<name>"}'}, status=400)
    try:
        user_id = users_of(request).add_user(username)
    except InvalidUsername as exc:
        return json_response({"error": str(exc)}, status=400)
    return json_response(user_id)


# --- settings ------------------------------------------------------------------------------


async def _read_json_value(request: web.Request) -> Any:
    """Any JSON value (null included); BadJson when the body is empty or not JSON."""
    raw = await request.read()
    if not raw.strip():
        raise BadJson("Request body is empty; a JSON value was expected.")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadJson(f"Request body is not valid JSON: {exc}") from exc


@routes.get("/settings")
@per_user
async def get_settings(request: web.Request, folder: Path) -> web.Response:
    return json_response(load_settings(folder))


@routes.get("/settings/{id}")
@per_user
async def get_setting(request: web.Request, folder: Path) -> web.Response:
    return json_response(load_settings(folder).get(request.match_info["id"]))


@routes.post("/settings")
@per_user
async def post_settings(request: web.Request, folder: Path) -> web.Response:
    try:
        changes = await read_json(request)
    except BadJson as exc:
        return bad_json_response(exc)
    # No await between load and save: concurrent POSTs cannot lose each other's keys.
    save_settings(folder, {**load_settings(folder), **changes})
    return web.Response()


@routes.post("/settings/{id}")
@per_user
async def post_setting(request: web.Request, folder: Path) -> web.Response:
    try:
        value = await _read_json_value(request)
    except BadJson as exc:
        return bad_json_response(exc)
    settings = load_settings(folder)
    settings[request.match_info["id"]] = value
    save_settings(folder, settings)
    return web.Response()


# --- listings ------------------------------------------------------------------------------


@routes.get("/userdata")
@per_user
async def list_userdata(request: web.Request, folder: Path) -> web.Response:
    directory = request.query.get("dir", "")
    if not directory:
        return _text(400, "Directory not provided")
    try:
        path = user_path(folder, directory, allow_root=True)
    except PathEscape:
        return _text(403, "Invalid directory")
    if not path.is_dir():
        return _text(404, "Directory not found")
    full_info, split = _flag(request, "full_info"), _flag(request, "split")
    files = await asyncio.to_thread(listed_files, path, _flag(request, "recurse"), folder)
    return json_response([listing_entry(f, path, full_info, split) for f in files])


@routes.get("/v2/userdata")
@per_user
async def list_userdata_v2(request: web.Request, folder: Path) -> web.Response:
    requested = unquote(request.query.get("path", ""))
    target = folder
    if requested:
        try:
            target = user_path(folder, requested, allow_root=True)
        except PathEscape:
            return _text(400, "Invalid path requested")
    if not target.exists():
        if target == folder:
            return json_response([])  # a user who has saved nothing yet
        return _text(404, "Requested path not found")
    if not target.is_dir():
        return _text(400, "Requested path is not a directory")
    return json_response(await asyncio.to_thread(tree, target, folder))


# --- one file ------------------------------------------------------------------------------


class BodyTooLarge(Exception):
    """The request body is bigger than the server's upload limit."""


async def _receive(request: web.Request, path: Path, limit: int) -> AtomicFile:
    """Stream the body into a temp file beside `path`; BodyTooLarge past `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge
    upload = AtomicFile(path)
    try:
        async for chunk in request.content.iter_chunked(_CHUNK):
            if upload.size + len(chunk) > limit:
                raise BodyTooLarge
            upload.write(chunk)
    except BaseException:
        upload.discard()
        raise
    return upload


@routes.get("/userdata/{file}")
@per_user
async def get_userdata(request: web.Request, folder: Path) -> web.StreamResponse:
    try:
        path = user_path(folder, request.match_info["file"])
    except PathEscape:
        return web.Response(status=403)
    if not path.exists():
        return web.Response(status=404)
    if not path.is_file():
        return _text(400, f"'{relative(path, folder)}' is a folder, not a file")
    return web.FileResponse(path, headers=delivery_headers(path.name))


@routes.post("/userdata/{file}")
@per_user
async def post_userdata(request: web.Request, folder: Path) -> web.Response:
    try:
        path = user_path(folder, request.match_info["file"])
    except PathEscape:
        return web.Response(status=403)
    overwrite = _overwrite(request)
    if not overwrite and os.path.lexists(path):
        return _text(409, "File already exists")
    limit = context_of(request).settings.max_upload_size
    try:
        upload = await _receive(request, path, limit)
        upload.commit(overwrite)
    except BodyTooLarge:
        return _text(413, f"Request body too large: the limit is {limit} bytes (--max-upload-size).")
    except FileExistsError:
        return _text(409, "File already exists")
    except OSError as exc:
        return _cannot_write(path, folder, exc)
    return _saved(path, folder, _flag(request, "full_info"))


@routes.delete("/userdata/{file}")
@per_user
async def delete_userdata(request: web.Request, folder: Path) -> web.Response:
    try:
        path = user_path(folder, request.match_info["file"])
    except PathEscape:
        return web.Response(status=403)
    if not os.path.lexists(path):
        return web.Response(status=404)
    if path.is_dir() and not path.is_symlink():
        return _text(400, f"'{relative(path, folder)}' is a folder, not a file")
    path.unlink()
    return web.Response(status=204)


@routes.post("/userdata/{file}/move/{dest}")
@per_user
async def move_userdata(request: web.Request, folder: Path) -> web.Response:
    try:
        source = user_path(folder, request.match_info["file"])
    except PathEscape:
        return web.Response(status=403)
    if not os.path.lexists(source):
        return web.Response(status=404)
    try:
        dest = user_path(folder, request.match_info["dest"])
    except PathEscape:
        return web.Response(status=403)
    overwrite = _overwrite(request)
    if not overwrite and os.path.lexists(dest):
        return _text(409, "File already exists")
    try:
        make_parent(dest)
        place(source, dest, overwrite)
    except FileExistsError:
        return _text(409, "File already exists")
    except OSError as exc:
        return _cannot_write(dest, folder, exc)
    log.info("moved user file '%s' -> '%s'", relative(source, folder), relative(dest, folder))
    return _saved(dest, folder, _flag(request, "full_info"))
