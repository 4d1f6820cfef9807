"""Headers for serving a user file: anything a browser would render or run is sent as a download.

User files are arbitrary uploads; served inline from the app's origin, an HTML or SVG file
could run script with the user's session (stored XSS). Data the web UI reads with fetch
(JSON, text, CSS, images, media) keeps its real type, as ComfyUI serves it.
"""

from __future__ import annotations

import mimetypes
from pathlib import PurePath

from comfyserve.inline_types import is_inline_safe

OCTET_STREAM = "application/octet-stream"

# What the web UI fetches from user data besides the common safe types: stylesheets
# (user.css), CSV and icons.
USERDATA_ALSO_INLINE = frozenset({"text/csv", "text/css", "image/x-icon", "image/vnd.microsoft.icon"})


def delivery_headers(name: str | PurePath) -> dict[str, str]:
    """Content-Type, X-Content-Type-Options and (for risky types) Content-Disposition for a file."""
    guessed = mimetypes.guess_type(str(name))[0] or OCTET_STREAM
    headers = {"X-Content-Type-Options": "nosniff"}
    if is_inline_safe(guessed, USERDATA_ALSO_INLINE):
        headers["Content-Type"] = guessed
    else:
        headers["Content-Type"] = OCTET_STREAM
        headers["Content-Disposition"] = "attachment"
    return headers
