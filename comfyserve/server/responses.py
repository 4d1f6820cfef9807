"""Response helpers: ComfyUI's JSON content type and its error envelope."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON with ComfyUI's `application/json; charset=utf-8`."""
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def error_body(kind: str, message: str, details: str = "", extra_info: dict | None = None) -> dict:
    """ComfyUI's `{"type", "message", "details", "extra_info"}` error object."""
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info or {}}


def error_response(
    kind: str,
    message: str,
    details: str = "",
    status: int = 400,
    node_errors: dict | None = None,
    extra_info: dict | None = None,
) -> web.Response:
    """ComfyUI's 400 envelope: `{"error": {...}, "node_errors": {...}}`."""
    return json_response(
        {"error": error_body(kind, message, details, extra_info), "node_errors": node_errors or {}},
        status=status,
    )


class BadJson(Exception):
    """The request body is not the JSON the route needs."""


async def read_json(request: web.Request, expect: type | tuple[type, ...] | None = dict) -> Any:
    """Parse the body as JSON whatever the Content-Type says; raise BadJson with a readable reason."""
    raw = await request.read()
    try:
        data = json.loads(raw) if raw else None
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadJson(f"Request body is not valid JSON: {exc}") from exc
    if data is None:
        raise BadJson("Request body is empty; a JSON object was expected.")
    if expect is not None and not isinstance(data, expect):
        raise BadJson(f"Request body must be a JSON object, got {type(data).__name__}.")
    return data


def bad_json_response(exc: BadJson) -> web.Response:
    return error_response("invalid_json", "Invalid request body", str(exc))
