"""The last few hundred log lines, kept in memory for the web UI's log panel.

`/internal/logs` and `/internal/logs/raw` read them; websocket clients that subscribed through
`PATCH /internal/logs/subscribe` get each new line pushed as a `logs` message.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

DEFAULT_CAPACITY = 300

# One entry as ComfyUI's frontend reads it: ISO timestamp and the text written, newline included.
LogEntry = dict[str, str]
# Called with (new entries, subscriber client id) from whatever thread logged.
Sink = Callable[[list[LogEntry], str], None]


def terminal_size() -> dict[str, int]:
    """The console's size, which the UI's log panel mimics; 80×24 when there is no terminal."""
    size = shutil.get_terminal_size((80, 24))
    return {"cols": size.columns, "rows": size.lines}


class LogBuffer(logging.Handler):
    """A logging handler that keeps the newest `capacity` records and forwards them to subscribers."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))
        self._entries: deque[LogEntry] = deque(maxlen=capacity)
        self._subscribers: set[str] = set()
        self._sink: Sink | None = None
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = {"t": datetime.fromtimestamp(record.created).isoformat(), "m": self.format(record) + "\n"}
        except Exception:
            self.handleError(record)
            return
        with self._guard:
            self._entries.append(entry)
            subscribers = list(self._subscribers)
            sink = self._sink
        if sink is not None:
            for sid in subscribers:
                sink([entry], sid)

    def entries(self) -> list[LogEntry]:
        """A copy of the kept entries, oldest first."""
        with self._guard:
            return list(self._entries)

    def text(self) -> str:
        """All kept entries as one string, `"<time> - <message>"` per line."""
        return "".join(f"{e['t']} - {e['m']}" for e in self.entries())

    def raw(self) -> dict[str, Any]:
        """The `/internal/logs/raw` body."""
        return {"entries": self.entries(), "size": terminal_size()}

    def set_sink(self, sink: Sink | None) -> None:
        """Where new entries go for subscribed clients (the websocket hub)."""
        with self._guard:
            self._sink = sink

    def subscribe(self, client_id: str, enabled: bool) -> None:
        with self._guard:
            if enabled:
                self._subscribers.add(client_id)
            else:
                self._subscribers.discard(client_id)

    def subscribers(self) -> set[str]:
        with self._guard:
            return set(self._subscribers)


def install(logger: logging.Logger | None = None, capacity: int = DEFAULT_CAPACITY) -> LogBuffer:
    """Attach a LogBuffer to `logger` (the root logger by default); reuse one already attached."""
    target = logger if logger is not None else logging.getLogger()
    for handler in target.handlers:
        if isinstance(handler, LogBuffer):
            return handler
    buffer = LogBuffer(capacity)
    target.addHandler(buffer)
    return buffer
