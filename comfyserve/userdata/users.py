"""The user registry: `default` alone, or (with --multi-user) the users listed in `users.json`.

A request's user is `default` unless the server runs multi-user, where the `Comfy-User`
header names it. Each user's files live in `<user folder>/<user id>`.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Mapping
from pathlib import Path

from comfyserve.paths import PathEscape, safe_join
from comfyserve.userdata.atomic import write_bytes_atomic

log = logging.getLogger(__name__)

DEFAULT_USER = "default"
USER_HEADER = "Comfy-User"
USERS_FILE = "users.json"
# Ids with this prefix are reserved for the server's own use and never reachable over HTTP.
SYSTEM_USER_PREFIX = "__"
_NOT_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]+")


class UnknownUser(LookupError):
    """The request names no registered user."""


class InvalidUsername(ValueError):
    """A username that cannot be registered."""


def user_id_for(name: str) -> str:
    """A fresh id for `name`: its letters, digits, `-` and `_` (others become `-`), `_`, a uuid4."""
    return f"{_NOT_ID_CHARS.sub('-', name)}_{uuid.uuid4()}"


class UserManager:
    """Registered users (id → name) and where each one's files live."""

    def __init__(self, users_dir: Path, multi_user: bool) -> None:
        self.users_dir = Path(users_dir)
        self.multi_user = multi_user
        self.users: dict[str, str] = self._load() if multi_user else {DEFAULT_USER: DEFAULT_USER}

    @property
    def users_file(self) -> Path:
        return self.users_dir / USERS_FILE

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.users_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("ignoring unreadable %s: %s", self.users_file, exc)
            return {}
        if not isinstance(data, dict):
            log.error("ignoring %s: not a JSON object", self.users_file)
            return {}
        return {str(k): str(v) for k, v in data.items()}

    def request_user(self, headers: Mapping[str, str]) -> str:
        """The user id a request acts as; raise UnknownUser when it is not registered."""
        user = DEFAULT_USER
        if self.multi_user and USER_HEADER in headers:
            user = headers[USER_HEADER]
        if user.startswith(SYSTEM_USER_PREFIX) or user not in self.users:
            if self.multi_user:
                raise UnknownUser(
                    f"Unknown user {user!r}: send a {USER_HEADER} header with an id listed by GET /users."
                )
            raise UnknownUser(f"Unknown user {user!r}.")
        return user

    def user_dir(self, user_id: str) -> Path:
        """The folder of a registered user's files (it may not exist yet)."""
        try:
            path = safe_join(self.users_dir, user_id)
        except PathEscape as exc:
            raise UnknownUser(f"User id {user_id!r} is not a valid folder name.") from exc
        if path == self.users_dir.resolve():
            raise UnknownUser(f"User id {user_id!r} is not a valid folder name.")
        return path

    def add_user(self, name: str) -> str:
        """Register `name` under a new id, persist `users.json`, return the id."""
        name = name.strip()
        if not name:
            raise InvalidUsername("username not provided")
        if name in self.users.values():
            raise InvalidUsername("Duplicate username.")
        user_id = user_id_for(name)
        if user_id.startswith(SYSTEM_USER_PREFIX):
            raise InvalidUsername("System User prefix not allowed")
        users = {**self.users, user_id: name}
        self.users_dir.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.users_file, json.dumps(users).encode())
        self.users = users
        return user_id
