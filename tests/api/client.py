"""Small real-network clients for black-box tests: HTTP via urllib, websocket via `websockets`."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDict
from websockets.sync.client import connect


@dataclass
class Reply:
    status: int
    headers: CIMultiDict  # header names in any letter case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")


def request(base: str, method: str, path: str, body: Any = None, headers: dict | None = None, raw: bytes | None = None) -> Reply:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return Reply(resp.status, CIMultiDict(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, CIMultiDict(err.headers.items()), err.read())


def call(base: str, method: str, path: str, data: bytes | None = None, headers: dict | None = None) -> Reply:
    """A request with a raw body (or none)."""
    return request(base, method, path, headers=headers, raw=data)


def send_record(base: str, record: dict) -> Reply:
    """Send one captured request of the reference as the capture script did."""
    sent = record["request"]
    headers = dict(sent.get("headers", {}))
    data = None
    if "json" in sent:
        data = json.dumps(sent["json"]).encode()
        headers.setdefault("Content-Type", "application/json")
    elif "data" in sent:
        data = sent["data"].encode()
    return call(base, sent["method"], sent["path"], data, headers)


def get(base: str, path: str, **kw) -> Reply:
    return request(base, "GET", path, **kw)


def post(base: str, path: str, body: Any = None, **kw) -> Reply:
    return request(base, "POST", path, body, **kw)


def wait_history(base: str, prompt_id: str, timeout: float = 30.0) -> dict:
    """Poll /history/{id} until the entry exists (completion), with a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = get(base, f"/history/{prompt_id}").json()
        if entry:
            return entry[prompt_id]
        time.sleep(0.02)
    raise AssertionError(f"prompt {prompt_id} did not finish within {timeout}s")


class WsClient:
    """A websocket client that records every frame it receives."""

    def __init__(self, ws_url: str, client_id: str | None = None) -> None:
        self.client_id = client_id
        url = ws_url + (f"?clientId={client_id}" if client_id else "")
        self.conn = connect(url, max_size=None)
        self.frames: list[Any] = []

    def recv(self, timeout: float = 10.0) -> Any:
        frame = self.conn.recv(timeout=timeout)
        value = json.loads(frame) if isinstance(frame, str) else frame
        self.frames.append(value)
        return value

    def until(self, predicate, timeout: float = 30.0) -> list[Any]:
        """Receive frames until `predicate(frame)` holds; return the frames received meanwhile."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching frame within {timeout}s; got {got[-5:]}")
            frame = self.recv(timeout=left)
            got.append(frame)
            if predicate(frame):
                return got

    def until_done(self, prompt_id: str, timeout: float = 30.0) -> list[Any]:
        """Frames up to and including the final `executing {node: null}` of `prompt_id`."""
        return self.until(
            lambda f: isinstance(f, dict)
            and f.get("type") == "executing"
            and f["data"].get("node") is None
            and f["data"].get("prompt_id") == prompt_id,
            timeout,
        )

    def send(self, obj: Any) -> None:
        self.conn.send(json.dumps(obj) if not isinstance(obj, (str, bytes)) else obj)

    def close(self) -> None:
        self.conn.close()


def types(frames: list[Any], skip: tuple[str, ...] = ("progress_state",)) -> list[str]:
    return [f["type"] if isinstance(f, dict) else "binary" for f in frames if not (isinstance(f, dict) and f["type"] in skip)]
