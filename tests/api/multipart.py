"""Hand-built multipart/form-data bodies, so tests control file names byte for byte
(client libraries quote or strip names like `a/b.png` and `../evil.png`)."""

from __future__ import annotations

import uuid

from tests.api.client import Reply, request


def encode(files: dict[str, tuple[str, str, bytes]], fields: dict[str, str] | None = None) -> tuple[bytes, str]:
    """(body, Content-Type) with `files` ({field: (filename, content type, bytes)}) first, as browsers send."""
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for name, (filename, content_type, data) in files.items():
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    for name, value in (fields or {}).items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def post_form(base: str, path: str, files: dict[str, tuple[str, str, bytes]], fields: dict[str, str] | None = None) -> Reply:
    body, content_type = encode(files, fields)
    return request(base, "POST", path, raw=body, headers={"Content-Type": content_type})


def upload(base: str, filename: str, data: bytes, path: str = "/upload/image", content_type: str = "image/png", **fields: str) -> Reply:
    """POST one file in the `image` field, with extra text fields."""
    return post_form(base, path, {"image": (filename, content_type, data)}, fields)
