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

import os
import re
import time
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


def counter_pattern(stem: str) -> re.Pattern[str]:
    """Names that take a number for `stem`: `<stem>_<digits>` then `_` or the end (ComfyUI's rule)."""
    escaped = re.escape(stem).replace(re.escape(BATCH_NUM), r"\d+")
    return re.compile(rf"{escaped}_(\d+)(?:_|$)")


def next_counter(folder: Path, stem: str) -> int:
    """One past the highest number already used by files of `stem` in `folder` (1 when none)."""
    pattern = counter_pattern(stem)
    highest = 0
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 1
    for name in names:
        match = pattern.match(name)
        if match:
            highest = max(highest, int(match.group(1)))
    return highest + 1


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
        folder = safe_join(output_dir, subfolder) if subfolder else Path(output_dir).resolve()
    except PathEscape as exc:
        # ComfyUI raises a plain Exception here; clients see exception_type "Exception" either way.
        raise Exception(f"{OUTSIDE_OUTPUT} The filename prefix {filename_prefix!r} leads outside it.") from exc
    folder.mkdir(parents=True, exist_ok=True)
    return SavePath(str(folder), stem, next_counter(folder, stem), subfolder, expanded)


def numbered_filename(stem: str, batch_number: int, counter: int, extension: str = "png") -> str:
    """`<stem with %batch_num% filled>_<counter:05>_.<extension>`, ComfyUI's file name."""
    return f"{stem.replace(BATCH_NUM, str(batch_number))}_{counter:05}_.{extension}"
