"""Saving an upload under ComfyUI's names, atomically.

Same name and same bytes → nothing is written and the existing name is answered; a name taken
by other bytes → `name (1).ext`, `name (2).ext`, … reusing the first numbered file whose bytes
match. The data lands in a hidden temp file beside the target and is then renamed into place
without clobbering, so a concurrent upload can never overwrite a name this one picked.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from comfyserve.userdata.atomic import AtomicFile

_CHUNK = 1024 * 1024


@dataclass
class Blob:
    """Uploaded bytes in a seekable file, with the size and digest the duplicate check needs."""

    file: BinaryIO
    size: int
    sha256: str

    @classmethod
    def from_bytes(cls, data: bytes) -> Blob:
        return cls(io.BytesIO(data), len(data), hashlib.sha256(data).hexdigest())

    def close(self) -> None:
        self.file.close()


def numbered_name(filename: str, number: int) -> str:
    """`red.png`, 2 → `red (2).png`."""
    stem, ext = os.path.splitext(filename)
    return f"{stem} ({number}){ext}"


def choose_name(directory: Path, filename: str, is_same: Callable[[Path], bool]) -> tuple[str, bool]:
    """The name an upload gets in `directory`, and whether a file of that name already holds it.

    Walks `filename`, `filename (1)`, … and stops at the first name that is free or whose
    file `is_same` says already has the upload's bytes.
    """
    name = filename
    number = 0
    while os.path.lexists(directory / name):
        if is_same(directory / name):
            return name, True
        number += 1
        name = numbered_name(filename, number)
    return name, False


def holds_same_bytes(path: Path, blob: Blob) -> bool:
    """True when `path` is a regular file with exactly the blob's bytes."""
    try:
        if not path.is_file() or path.stat().st_size != blob.size:
            return False
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return False
    return digest.hexdigest() == blob.sha256


def _write(target: Path, blob: Blob, overwrite: bool) -> None:
    blob.file.seek(0)
    with AtomicFile(target) as out:
        shutil.copyfileobj(blob.file, out, _CHUNK)
        out.commit(overwrite)


def store_upload(directory: Path, filename: str, blob: Blob, overwrite: bool) -> str:
    """Save `blob` in `directory` as ComfyUI would and return the name it ends up under.

    Raises OSError subclasses when the disk refuses (IsADirectoryError: a folder has the
    name; NotADirectoryError: a file stands where the subfolder should be).
    """
    if overwrite:
        _write(directory / filename, blob, overwrite=True)
        return filename
    while True:
        name, already_there = choose_name(directory, filename, lambda path: holds_same_bytes(path, blob))
        if already_there:
            return name
        try:
            _write(directory / name, blob, overwrite=False)
        except FileExistsError:
            continue  # another writer took the name since we looked; look again
        return name
