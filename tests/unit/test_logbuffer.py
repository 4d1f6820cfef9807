"""The in-memory log ring behind `/internal/logs`, and its push to subscribers."""

from __future__ import annotations

import logging
from datetime import datetime

import pytest

from comfyserve import logbuffer


@pytest.fixture
def logger():
    """A private logger, so the test neither sees nor disturbs the root logger's handlers."""
    log = logging.getLogger(f"test-logbuffer-{id(object())}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    log.handlers.clear()


def test_keeps_the_newest_records_in_order(logger):
    buffer = logbuffer.install(logger, capacity=3)
    for n in range(5):
        logger.info("line %d", n)
    entries = buffer.entries()
    assert [e["m"] for e in entries] == ["line 2\n", "line 3\n", "line 4\n"]
    for entry in entries:
        datetime.fromisoformat(entry["t"])


def test_text_joins_time_and_message(logger):
    buffer = logbuffer.install(logger)
    logger.warning("first")
    logger.error("second")
    first, second = buffer.entries()
    assert buffer.text() == f"{first['t']} - first\n{second['t']} - second\n"


def test_exceptions_keep_their_traceback(logger):
    buffer = logbuffer.install(logger)
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    message = buffer.entries()[0]["m"]
    assert message.startswith("failed\nTraceback") and "ValueError: boom" in message


def test_install_is_idempotent(logger):
    assert logbuffer.install(logger) is logbuffer.install(logger)
    assert sum(isinstance(h, logbuffer.LogBuffer) for h in logger.handlers) == 1


def test_raw_has_entries_and_a_terminal_size(logger):
    buffer = logbuffer.install(logger)
    logger.info("hello")
    raw = buffer.raw()
    assert raw["entries"] == buffer.entries()
    assert raw["size"]["cols"] > 0 and raw["size"]["rows"] > 0


def test_subscribers_get_new_lines_until_they_unsubscribe(logger):
    buffer = logbuffer.install(logger)
    pushed: list[tuple[list[dict], str]] = []
    buffer.set_sink(lambda entries, sid: pushed.append((entries, sid)))
    logger.info("before")
    buffer.subscribe("abc", True)
    logger.info("during")
    buffer.subscribe("abc", False)
    logger.info("after")
    assert [(entries[0]["m"], sid) for entries, sid in pushed] == [("during\n", "abc")]
    assert buffer.subscribers() == set()
