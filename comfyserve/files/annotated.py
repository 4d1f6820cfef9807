"""ComfyUI's annotated file names: `name.png [input]` says which folder `name.png` is in."""

from __future__ import annotations

ANNOTATIONS = {" [input]": "input", " [output]": "output", " [temp]": "temp"}


def split_annotation(name: str) -> tuple[str, str | None]:
    """`"a.png [input]"` → `("a.png", "input")`; a name without annotation → `(name, None)`."""
    for suffix, kind in ANNOTATIONS.items():
        if name.endswith(suffix):
            return name[: -len(suffix)], kind
    return name, None
