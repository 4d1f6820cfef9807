"""`comfy.cli_args` for custom nodes: `args`, the server's command line parsed with ComfyUI's flags.

Packs read it for things like `args.disable_metadata` or `args.preview_method`. The values are
those the running server was started with (comfyserve accepts every ComfyUI 0.8 flag).
"""

from __future__ import annotations

import argparse
import enum

from comfyserve import runtime
from comfyserve.cli import build_parser

__all__ = ["LatentPreviewMethod", "args"]


class LatentPreviewMethod(enum.Enum):
    NoPreviews = "none"
    Auto = "auto"
    Latent2RGB = "latent2rgb"
    TAESD = "taesd"


def parse_server_args() -> argparse.Namespace:
    """The running server's command line (defaults outside a server)."""
    argv = runtime.settings().argv
    parsed = build_parser().parse_known_args(argv[1:])[0]
    method = getattr(parsed, "preview_method", None)
    if isinstance(method, str) and method in {m.value for m in LatentPreviewMethod}:
        parsed.preview_method = LatentPreviewMethod(method)  # ComfyUI's type for this flag
    return parsed


args = parse_server_args()
