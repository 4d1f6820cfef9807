"""LoadImage's siblings in ComfyUI's core: one channel of an input file as a mask, and images from
the output folder. Both use LoadImage's annotated names (`name.png [output]`), checks and hash.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from comfyserve import runtime
from comfyserve.imageio import EMPTY_MASK_SIZE, SIXTEEN_BIT_MODES, with_truncated_retry
from comfyserve.paths import PathEscape
from nodes.image import LoadImage, annotated_path, top_level_files

MASK_CHANNELS = ["alpha", "red", "green", "blue"]
OUTPUT_FILES_ROUTE = "/internal/files/output"


def _rgba(picture: Image.Image) -> Image.Image:
    """The picture as RGBA; wide integer data is first scaled down by 255, as ComfyUI does for mode I."""
    if picture.getbands() == ("R", "G", "B", "A"):
        return picture
    if picture.mode in SIXTEEN_BIT_MODES:
        picture = picture.convert("I").point(lambda value: value * (1 / 255))
    return picture.convert("RGBA")


class LoadImageMask:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        # Every file of the input folder, not only images: ComfyUI filters only LoadImage's list.
        files = top_level_files(runtime.folders().input)
        return {"required": {"image": (files, {"image_upload": True}), "channel": (MASK_CHANNELS,)}}

    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "load_image"

    def load_image(self, image: str, channel: str) -> tuple[torch.Tensor]:
        """One channel of the first frame as [1, H, W]; for alpha the mask is 1 − alpha."""
        try:
            path = annotated_path(image)
        except PathEscape as exc:
            raise ValueError(f"Invalid image file: {image}") from exc
        with with_truncated_retry(Image.open, str(path)) as opened:
            picture = _rgba(with_truncated_retry(ImageOps.exif_transpose, opened))
        band = channel[0].upper()
        if band not in picture.getbands():
            return (torch.zeros((1, *EMPTY_MASK_SIZE), dtype=torch.float32),)
        mask = torch.from_numpy(np.array(picture.getchannel(band)).astype(np.float32) / 255.0)
        if band == "A":
            mask = 1.0 - mask
        return (mask.unsqueeze(0),)

    @classmethod
    def IS_CHANGED(cls, image: str, channel: str) -> str:
        return LoadImage.IS_CHANGED(image)

    @classmethod
    def VALIDATE_INPUTS(cls, image: str) -> bool | str:
        return LoadImage.VALIDATE_INPUTS(image)


class LoadImageOutput(LoadImage):
    """LoadImage with its choices fetched by the web UI from the output-files route.

    The combo carries no list: the front end asks `/internal/files/output` and sends names
    annotated `name.png [output]`; a plain name still means the input folder, as in ComfyUI.
    """

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": (
                    "COMBO",
                    {
                        "image_upload": True,
                        "image_folder": "output",
                        "remote": {"route": OUTPUT_FILES_ROUTE, "refresh_button": True, "control_after_refresh": "first"},
                    },
                ),
            }
        }

    DESCRIPTION = (
        "Load an image from the output folder. When the refresh button is clicked, the node will update the "
        "image list and automatically select the first image, allowing for easy iteration."
    )
    EXPERIMENTAL = True
    FUNCTION = "load_image"


NODE_CLASS_MAPPINGS = {"LoadImageMask": LoadImageMask, "LoadImageOutput": LoadImageOutput}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadImageMask": "Load Image (as Mask)",
    "LoadImageOutput": "Load Image (from Outputs)",
}
