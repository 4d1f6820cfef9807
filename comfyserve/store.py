"""SQLite persistence for the queue and the history, so a restart loses nothing.

One file in the user directory, WAL mode. Pending and running prompts live in `prompts`;
finished ones move to `history` (completion order = row order). A prompt found `running`
at start-up was cut off by a crash: it is re-queued once, and marked failed the second time.

Every prompt costs three small transactions (queued, running, finished), so the tables are laid
out to touch few pages: `prompts` and `meta` are clustered on their key (WITHOUT ROWID: no
second index to update), and `history` numbers its rows without AUTOINCREMENT's extra table
(a new row still gets one past the highest, so row order stays completion order). Files made
by earlier versions keep their layout and work the same.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts (
    prompt_id   TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL,
    item        TEXT NOT NULL,      -- JSON [number, prompt_id, prompt, extra_data, outputs_to_execute]
    state       TEXT NOT NULL,      -- 'pending' | 'running'
    attempts    INTEGER NOT NULL DEFAULT 0,
    started_at  INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key         TEXT PRIMARY KEY,
    value       INTEGER NOT NULL    -- 'counter': the next ComfyUI `number` (earlier versions)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    seq         INTEGER PRIMARY KEY,
    prompt_id   TEXT UNIQUE NOT NULL,
    entry       TEXT NOT NULL,      -- JSON history entry, as GET /history/{id} shows it
    timing      TEXT NOT NULL       -- JSON {create_time, execution_start_time, execution_end_time}
);
-- A prompt that reaches the history leaves the queue in the same statement.
CREATE TRIGGER IF NOT EXISTS history_takes_its_prompt AFTER INSERT ON history BEGIN
    DELETE FROM prompts WHERE prompt_id = NEW.prompt_id;
END;
"""


class StoreBusy(RuntimeError):
    """Another process (a second server on the same user directory) holds the database."""


@dataclass
class StoredPrompt:
    """A queued prompt as persisted: the queue item and how often it has been started."""

    seq: int
    item: list[Any]
    state: str
    attempts: int


class Store:
    """Thread-safe access to the SQLite file (the HTTP loop and the worker thread share it)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=1.0)
        # One server owns the file: the exclusive lock spares a lock/unlock per transaction and
        # makes a second server on the same user directory fail at start instead of racing.
        try:
            self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except sqlite3.OperationalError as exc:
            self._db.close()
            if "locked" in str(exc):
                raise StoreBusy(
                    f"{path} is in use by another comfyserve process; give this one its own "
                    "--user-directory (or --base-directory)."
                ) from exc
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- queue -----------------------------------------------------------------------------
    def add_pending(self, prompt_id: str, seq: int, item: list[Any]) -> None:
        """Persist a new pending prompt (one statement: one transaction)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO prompts (prompt_id, seq, item, state, attempts) VALUES (?, ?, ?, 'pending', 0)",
                (prompt_id, seq, json.dumps(item)),
            )

    def saved_counter(self) -> int:
        """The number counter as files from earlier versions kept it in `meta` (0 if none); the
        queue now derives it from the prompts it loads, with this as a lower bound."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='counter'").fetchone()
        return int(row[0]) if row else 0

    def mark_running(self, prompt_id: str, started_at: int) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE prompts SET state='running', attempts=attempts+1, started_at=? WHERE prompt_id=?",
                (started_at, prompt_id),
            )

    def remove_pending(self, prompt_ids: list[str]) -> None:
        with self._lock:
            self._db.executemany(
                "DELETE FROM prompts WHERE prompt_id=? AND state='pending'", [(p,) for p in prompt_ids]
            )

    def clear_pending(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM prompts WHERE state='pending'")

    def queued(self) -> list[StoredPrompt]:
        """Every prompt not yet finished, in submission order."""
        with self._lock:
            rows = self._db.execute("SELECT seq, item, state, attempts FROM prompts ORDER BY seq").fetchall()
        return [StoredPrompt(seq, json.loads(item), state, attempts) for seq, item, state, attempts in rows]

    def requeue(self, prompt_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE prompts SET state='pending' WHERE prompt_id=?", (prompt_id,))

    # -- history ---------------------------------------------------------------------------
    def finish(self, prompt_id: str, entry: dict[str, Any], timing: dict[str, Any], drop_oldest: int = 0) -> None:
        """Move a prompt from the queue to the history in one transaction, dropping the
        `drop_oldest` oldest entries (the caller keeps the history at its bound)."""
        # A prompt id run again replaces its old entry, and moves to the end; the trigger takes
        # the prompt out of `prompts`. One statement is one transaction, so the common case (no
        # trimming) costs the worker a single call into SQLite.
        insert = "INSERT OR REPLACE INTO history (prompt_id, entry, timing) VALUES (?, ?, ?)"
        values = (prompt_id, json.dumps(entry), json.dumps(timing))
        with self._lock:
            db = self._db
            if drop_oldest <= 0:
                db.execute(insert, values)
                return
            db.execute("BEGIN")
            try:
                db.execute(
                    "DELETE FROM history WHERE seq IN (SELECT seq FROM history ORDER BY seq LIMIT ?)", (drop_oldest,)
                )
                db.execute(insert, values)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def drop_oldest_history(self, count: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM history WHERE seq IN (SELECT seq FROM history ORDER BY seq LIMIT ?)", (count,))

    def history(self) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """(prompt_id, entry, timing) for every finished prompt, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT prompt_id, entry, timing FROM history ORDER BY seq").fetchall()
        return [(pid, json.loads(entry), json.loads(timing)) for pid, entry, timing in rows]

    def delete_history(self, prompt_ids: list[str]) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM history WHERE prompt_id=?", [(p,) for p in prompt_ids])

    def clear_history(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM history")
