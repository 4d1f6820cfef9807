"""The one exception the file helpers raise for a request they refuse."""

from __future__ import annotations


class FileRequestError(Exception):
    """A refused file request: HTTP status, error type and a message a person understands.

    `bare` keeps ComfyUI's empty-body answer for the cases its clients already know
    (path traversal, missing file); everything else is answered in the JSON error envelope.
    """

    def __init__(self, status: int, kind: str, message: str, *, bare: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.bare = bare
