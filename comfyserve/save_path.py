"""Where a save node writes: ComfyUI's filename-prefix rules, as `get_save_image_path`.

A prefix like `"portraits/%width%x%height%"` becomes a folder under the output folder
(`portraits`), a file stem (`512x768`) and a counter one past the highest number already used
for that stem, so files are named `<stem>_<00001>_.png` and never overwrite each other.

Differences from ComfyUI, all to avoid overwriting or odd names: the counter also counts
files whose `%batch_num%` part was filled in, and a prefix ending in `/` counts its own files
(ComfyUI restarts at 1 for both); an empty prefix saves as `ComfyUI`; the folder part goes
through `safe_join`, so a symlink out of the output folder is refused too.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from comfyserve.paths import PathEscape, safe_join

BATCH_NUM = "%batch_num%"
DEFAULT_PREFIX = "ComfyUI"
OUTSIDE_OUTPUT = "Saving image outside the output folder is not allowed."


class SavePath(NamedTuple):
    """ComfyUI's 5-tuple: folder to write in, file stem, first counter, subfolder, expanded prefix."""

    full_output_folder: str
    filename: str
    counter: int
    subfolder: str
    filename_prefix: str


def expand_placeholders(prefix: str, width: int, height: int, now: time.struct_time | None = None) -> str:
    """Fill in `%width%`, `%height%` and the local date/time fields; `%batch_num%` stays for the caller."""
    if "%" not in prefix:
        return prefix
    now = now or time.localtime()
    values = {
        "%width%": str(width),
        "%height%": str(height),
        "%year%": str(now.tm_year),
        "%month%": f"{now.tm_mon:02}",
        "%day%": f"{now.tm_mday:02}",
        "%hour%": f"{now.tm_hour:02}",
        "%minute%": f"{now.tm_min:02}",
        "%second%": f"{now.tm_sec:02}",
    }
    for placeholder, value in values.items():
        prefix = prefix.replace(placeholder, value)
    return prefix


def split_prefix(prefix: str) -> tuple[str, str]:
    """(subfolder, file stem) of an expanded prefix, normalised as a path (`a//b/` → `a`, `b`)."""
    normal = os.path.normpath(prefix) if prefix else "."
    subfolder, stem = os.path.split(normal)
    if stem in ("", "."):
        stem = DEFAULT_PREFIX
    return subfolder, stem


@functools.lru_cache(maxsize=256)
def counter_pattern(stem: str) -> re.Pattern[str]:
    """Names that take a number for `stem`: `<stem>_<digits>` then `_` or the end (ComfyUI's rule)."""
    escaped = re.escape(stem).replace(re.escape(BATCH_NUM), r"\d+")
    return re.compile(rf"{escaped}_(\d+)(?:_|$)")


@dataclass
class _FolderIndex:
    """What one folder held when its modification time was `mtime_ns`."""

    mtime_ns: int
    names: list[str]
    highest: dict[str, int] = field(default_factory=dict)


class CounterIndex:
    """The highest number per stem in each folder, without listing the folder on every save.

    ComfyUI lists the folder for every image (slow once it holds thousands). The index keeps the
    listing while the folder's mtime is unchanged; a save node that wrote files reports them
    (`saved`) so its own writes do not count as a change. Any other change to the folder — a file
    added, removed or renamed by someone else — changes its mtime and forces a fresh listing.
    """

    def __init__(self) -> None:
        self._folders: dict[str, _FolderIndex] = {}
        self._lock = threading.Lock()

    def next_counter(self, folder: Path, stem: str) -> int:
        """One past the highest number `stem` uses in `folder` (1 when the folder is missing)."""
        try:
            return self.next_counter_in_existing(folder, stem)
        except FileNotFoundError:
            return 1

    def next_counter_in_existing(self, folder: Path, stem: str) -> int:
        """Like `next_counter`, but FileNotFoundError when `folder` does not exist."""
        key = str(folder)
        mtime_ns = os.stat(key).st_mtime_ns
        with self._lock:
            index = self._folders.get(key)
            if index is None or index.mtime_ns != mtime_ns:
                index = self._folders[key] = _FolderIndex(mtime_ns, os.listdir(key))
            if stem not in index.highest:
                pattern = counter_pattern(stem)
                highest = 0
                for name in index.names:
                    match = pattern.match(name)
                    if match:
                        highest = max(highest, int(match.group(1)))
                index.highest[stem] = highest
            return index.highest[stem] + 1

    def saved(self, folder: Path, stem: str, names: list[str], last_counter: int) -> None:
        """A save node wrote `names` (numbered up to `last_counter`) into `folder`."""
        key = str(folder)
        with self._lock:
            index = self._folders.get(key)
            if index is None:
                return
            index.names.extend(names)
            # Other stems' maxima may include these names: recount them when next asked.
            index.highest = {stem: max(index.highest.get(stem, 0), last_counter)}
            try:
                index.mtime_ns = os.stat(key).st_mtime_ns
            except FileNotFoundError:
                self._folders.pop(key, None)

    def forget(self, folder: Path) -> None:
        with self._lock:
            self._folders.pop(str(folder), None)


COUNTERS = CounterIndex()


def next_counter(folder: Path, stem: str) -> int:
    """One past the highest number already used by files of `stem` in `folder` (1 when none)."""
    return COUNTERS.next_counter(folder, stem)


def get_save_image_path(
    filename_prefix: str, output_dir: str | Path, image_width: int = 0, image_height: int = 0
) -> SavePath:
    """Resolve a save node's prefix inside `output_dir`, creating the subfolder; refuse to leave it."""
    expanded = expand_placeholders(filename_prefix, image_width, image_height)
    if "\x00" in expanded:
        raise ValueError("The filename prefix contains a NUL character.")
    subfolder, stem = split_prefix(expanded)
    try:
        if stem == "..":
            raise PathEscape("the prefix names the parent folder")
        folder = safe_join(output_dir, subfolder) if subfolder else _resolved_folder(str(output_dir))
    except PathEscape as exc:
        # ComfyUI raises a plain Exception here; clients see exception_type "Exception" either way.
        raise Exception(f"{OUTSIDE_OUTPUT} The filename prefix {filename_prefix!r} leads outside it.") from exc
    try:  # the folder usually exists: one stat instead of a mkdir that fails
        counter = COUNTERS.next_counter_in_existing(folder, stem)
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True)
        counter = COUNTERS.next_counter(folder, stem)
    return SavePath(str(folder), stem, counter, subfolder, expanded)


@functools.lru_cache(maxsize=64)
def _resolved_folder(output_dir: str) -> Path:
    """A save node's own folder with symlinks resolved, once per folder (it is fixed at start-up)."""
    return Path(output_dir).resolve()


def numbered_filename(stem: str, batch_number: int, counter: int, extension: str = "png") -> str:
    """`<stem with %batch_num% filled>_<counter:05>_.<extension>`, ComfyUI's file name."""
    return f"{stem.replace(BATCH_NUM, str(batch_number))}_{counter:05}_.{extension}"
