"""Headers for serving a user file: anything a browser would render or run is sent as a download.

User files are arbitrary uploads; served inline from the app's origin, an HTML or SVG file
could run script with the user's session (stored XSS). Data the web UI reads with fetch
(JSON, text, CSS, images, media) keeps its real type, as ComfyUI serves it.
"""

from __future__ import annotations

import mimetypes
from pathlib import PurePath

OCTET_STREAM = "application/octet-stream"

# Types safe to serve inline: browsers never execute them as a document or script.
_INLINE_TYPES = frozenset({"application/json", "text/plain", "text/csv", "text/css"})
_INLINE_FAMILIES = ("audio/", "video/")
_INLINE_IMAGES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
        "image/x-icon",
        "image/vnd.microsoft.icon",
    }
)


def is_inline_safe(content_type: str) -> bool:
    """True for types a browser shows without running anything from them."""
    return (
        content_type in _INLINE_TYPES
        or content_type in _INLINE_IMAGES
        or content_type.startswith(_INLINE_FAMILIES)
    )


def delivery_headers(name: str | PurePath) -> dict[str, str]:
    """Content-Type, X-Content-Type-Options and (for risky types) Content-Disposition for a file."""
    guessed = mimetypes.guess_type(str(name))[0] or OCTET_STREAM
    headers = {"X-Content-Type-Options": "nosniff"}
    if is_inline_safe(guessed):
        headers["Content-Type"] = guessed
    else:
        headers["Content-Type"] = OCTET_STREAM
        headers["Content-Disposition"] = "attachment"
    return headers
