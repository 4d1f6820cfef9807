"""Atomic file writes: data goes to a hidden temp file beside the target, then replaces it.

A reader never sees a half-written file, and a crash mid-write leaves the old one intact.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


def make_parent(target: Path) -> None:
    """Create the folders above `target`; NotADirectoryError when a file stands in the way."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise NotADirectoryError(
            errno.ENOTDIR, "a file stands where a folder is needed", str(target.parent)
        ) from exc


def _link_no_clobber(src: Path, dest: Path) -> None:
    """Give `src` the name `dest` unless `dest` exists (FileExistsError); atomic where links work."""
    try:
        os.link(src, dest, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:
        # No hard links here (some file systems): check, then rename.
        if os.path.lexists(dest):
            raise FileExistsError(dest) from None
        os.replace(src, dest)
        return
    os.unlink(src)


def place(src: Path, dest: Path, overwrite: bool) -> None:
    """Rename `src` to `dest`; with overwrite=False raise FileExistsError when `dest` exists."""
    if overwrite:
        os.replace(src, dest)
    elif src.is_dir() and not src.is_symlink():
        if os.path.lexists(dest):
            raise FileExistsError(dest)
        os.rename(src, dest)
    else:
        _link_no_clobber(src, dest)


class AtomicFile:
    """A file being written in chunks; `commit` puts it in place, `discard` drops it."""

    def __init__(self, target: Path) -> None:
        self.target = Path(target)
        make_parent(self.target)
        fd, name = tempfile.mkstemp(dir=self.target.parent, prefix=f".{self.target.name}.", suffix=".tmp")
        self.temp = Path(name)
        self._file = os.fdopen(fd, "wb")
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self.size += len(chunk)

    def commit(self, overwrite: bool = True) -> None:
        """Flush to disk and give the data the target's name (FileExistsError if not overwrite)."""
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            place(self.temp, self.target, overwrite)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        self._file.close()
        self.temp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.discard()


def write_bytes_atomic(target: Path, data: bytes, overwrite: bool = True) -> None:
    """Write `data` to `target` atomically (creating parent folders)."""
    with AtomicFile(target) as f:
        f.write(data)
        f.commit(overwrite)
