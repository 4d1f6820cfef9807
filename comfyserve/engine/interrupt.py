"""The one interrupt check every long-running node calls.

The worker owns a flag; `POST /interrupt` sets it; the executor checks it between nodes and
nodes call `throw_if_interrupted()` inside their loops (ComfyUI's
`comfy.model_management.throw_exception_if_processing_interrupted`).
"""

from __future__ import annotations

import threading

_flag = threading.Event()


class InterruptProcessingException(Exception):
    """Raised inside execution when the running prompt was interrupted."""


def use_flag(flag: threading.Event) -> None:
    """Make `flag` the interrupt flag checked by nodes (the worker installs the queue's)."""
    global _flag
    _flag = flag


def interrupt_requested() -> bool:
    return _flag.is_set()


def request_interrupt() -> None:
    _flag.set()


def throw_if_interrupted() -> None:
    """Raise InterruptProcessingException if an interrupt is pending (and consume it)."""
    if _flag.is_set():
        _flag.clear()
        raise InterruptProcessingException()
