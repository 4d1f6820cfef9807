"""The one list of content types a browser may be sent inline from our origin.

Files clients upload are served back (`/view`, `/userdata`); an HTML, SVG or script file sent
with its real type would run with the user's session. These types are only ever shown, never
run; everything else goes out as application/octet-stream (and, for user files, as a download).
"""

from __future__ import annotations

SAFE_INLINE_TYPES = frozenset({
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp",
    "text/plain", "application/json",
})
SAFE_INLINE_FAMILIES = ("audio/", "video/")


def is_inline_safe(content_type: str, also: frozenset[str] = frozenset()) -> bool:
    """True for a type a browser shows without running anything from it (`also`: a caller's extras)."""
    return content_type in SAFE_INLINE_TYPES or content_type in also or content_type.startswith(SAFE_INLINE_FAMILIES)
