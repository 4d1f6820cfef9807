"""SaveImageWebsocket: hands each image to the submitting client as a binary websocket frame.

Stock ComfyUI ships it as a default custom node (`custom_nodes/websocket_image_save.py`);
scripts use it to receive images without files: after the node's `executing`, one `progress`
per image (value 0, 1, … of the batch size) with a PNG preview frame — type 1, format 2, then
the PNG (or the type 4 frame for clients that asked for preview metadata) — to that client only.
"""

from __future__ import annotations

import io
import time
from typing import Any

import torch

from comfyserve.engine import progress
from comfyserve.imageio import tensor_to_pil


class SaveImageWebsocket:
    RELATIVE_PYTHON_MODULE = "custom_nodes.websocket_image_save"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"images": ("IMAGE",)}}

    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "api node/image"

    def save_images(self, images: torch.Tensor) -> dict[str, Any]:
        total = images.shape[0]
        for step, image in enumerate(images):
            buffer = io.BytesIO()
            tensor_to_pil(image).save(buffer, format="PNG", compress_level=1)
            progress.report(step, total, ("image/png", buffer.getvalue()))
        return {}

    @classmethod
    def IS_CHANGED(cls, images: Any = None) -> float:
        # Always runs: the frames are its output, and a cached run would send none.
        return time.time()


NODE_CLASS_MAPPINGS = {"SaveImageWebsocket": SaveImageWebsocket}
