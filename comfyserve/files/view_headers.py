"""Headers for files served by `/view`: nothing a browser would run is ever sent inline.

Anything can be uploaded to input/, and `/view` serves it from the app's own origin; an HTML,
SVG or script file served with its real type could run code with the user's session. Only
types a browser shows without executing anything keep their type; the rest (ComfyUI already
does this for html/js/css) goes out as application/octet-stream. Every answer is `nosniff`.
"""

from __future__ import annotations

import mimetypes
from urllib.parse import quote

from comfyserve.inline_types import is_inline_safe

OCTET_STREAM = "application/octet-stream"
NOSNIFF = {"X-Content-Type-Options": "nosniff"}

# /view also shows TIFF images inline (input images can be TIFF).
VIEW_ALSO_INLINE = frozenset({"image/tiff"})


def view_content_type(filename: str) -> str:
    """The Content-Type `/view` sends for a stored file: its real type when harmless, else octet-stream."""
    guessed = mimetypes.guess_type(filename)[0] or OCTET_STREAM
    if is_inline_safe(guessed, VIEW_ALSO_INLINE):
        return guessed
    return OCTET_STREAM


def content_disposition(filename: str) -> str:
    """ComfyUI's `filename="<name>"`; names it cannot quote safely also get an RFC 5987 `filename*`."""
    plain = filename.isascii() and filename.isprintable() and '"' not in filename and "\\" not in filename
    if plain:
        return f'filename="{filename}"'
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f"filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def view_headers(filename: str, content_type: str) -> dict[str, str]:
    """Content-Type, Content-Disposition and nosniff for one `/view` answer."""
    return {"Content-Type": content_type, "Content-Disposition": content_disposition(filename), **NOSNIFF}
