"""`comfy.utils` for custom nodes: ProgressBar on the engine's progress API, and image helpers.

`ProgressBar(total).update(1)` / `.update_absolute(value, total, preview)` send `progress` and
`progress_state` for the node running now (or for `node_id` when given), and a preview frame
when `preview` is ComfyUI's `("JPEG" | "PNG", PIL image, max size)`. Outside execution it does
nothing, as in ComfyUI without a hook.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

from comfyserve.engine import progress
from comfyserve.engine.previews import encode_preview

log = logging.getLogger(__name__)

PROGRESS_BAR_ENABLED = True
# A hook set by `set_progress_bar_global_hook` replaces the engine's reporting (ComfyUI's API).
PROGRESS_BAR_HOOK: Callable[..., Any] | None = None


def set_progress_bar_enabled(enabled: bool) -> None:
    """ComfyUI's switch for its console progress bars; comfyserve draws none, so only remembered."""
    global PROGRESS_BAR_ENABLED
    PROGRESS_BAR_ENABLED = enabled


def set_progress_bar_global_hook(function: Callable[..., Any] | None) -> None:
    global PROGRESS_BAR_HOOK
    PROGRESS_BAR_HOOK = function


def _report(value: float, total: float, preview: Any, node_id: str | None) -> None:
    reporter = progress.current()
    if reporter is None:
        return
    if node_id is not None and str(node_id) != reporter.node_id:
        reporter = copy.copy(reporter)
        reporter.node_id = str(node_id)
    reporter.report(value, total, encode_preview(preview))


class ProgressBar:
    """A node's progress: `total` steps, `current` done so far."""

    def __init__(self, total: float, node_id: str | None = None) -> None:
        self.total = total
        self.current: float = 0
        self.node_id = node_id
        self.hook = PROGRESS_BAR_HOOK

    def update_absolute(self, value: float, total: float | None = None, preview: Any = None) -> None:
        """Set progress to `value` (capped at the total; `total` replaces it when given)."""
        if total is not None:
            self.total = total
        value = min(value, self.total)
        self.current = value
        if self.hook is not None:
            self.hook(self.current, self.total, preview, node_id=self.node_id)
        else:
            _report(self.current, self.total, preview, self.node_id)

    def update(self, value: float) -> None:
        """Advance by `value` steps."""
        self.update_absolute(self.current + value)


def common_upscale(samples: Any, width: int, height: int, upscale_method: str, crop: str) -> Any:
    """Resize a [N,C,H,W] tensor: nearest-exact, bilinear, area, bicubic or lanczos; crop "center" or "disabled"."""
    from nodes.image import common_upscale as upscale

    return upscale(samples, width, height, upscale_method, crop)


def lanczos(samples: Any, width: int, height: int) -> Any:
    from nodes.image import lanczos as resize

    return resize(samples, width, height)


def load_torch_file(
    ckpt: str, safe_load: bool = False, device: Any = None, return_metadata: bool = False
) -> Any:
    """A state dict from a .safetensors/.sft file or a torch checkpoint (weights only unless asked)."""
    import torch

    if device is None:
        device = torch.device("cpu")
    metadata = None
    if str(ckpt).lower().endswith((".safetensors", ".sft")):
        from safetensors import safe_open

        with safe_open(str(ckpt), framework="pt", device=str(device)) as handle:
            state = {key: handle.get_tensor(key) for key in handle.keys()}
            metadata = handle.metadata() if return_metadata else None
    else:
        loaded = torch.load(ckpt, map_location=device, weights_only=True)
        if isinstance(loaded, dict) and "state_dict" in loaded:
            state = loaded["state_dict"]
        elif isinstance(loaded, dict) and "params_ema" in loaded:
            state = loaded["params_ema"]
        else:
            state = loaded
    return (state, metadata) if return_metadata else state
