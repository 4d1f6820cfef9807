"""Prompts the black-box tests post: tiny ones and a slow one (a chain of image resamples)."""

from __future__ import annotations


def tiny(color: int, prefix: str | None = None) -> dict:
    """EmptyImage → ImageInvert → PreviewImage (or SaveImage with `prefix`)."""
    out = (
        {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}}
        if prefix
        else {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}
    )
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": out,
    }


def slow(color: int, steps: int = 60, size: int = 1024) -> dict:
    """`steps` lanczos resamples of a `size`² image: ~13 ms each on this 2-vCPU VM, so a prompt
    that must still be running after a few requests (and is interrupted or killed) takes 1,000."""
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": 1, "color": color}},
    }
    previous = "1"
    for i in range(steps):
        node = str(100 + i)
        prompt[node] = {
            "class_type": "ImageScaleBy",
            "inputs": {"image": [previous, 0], "upscale_method": "lanczos", "scale_by": 1.0},
        }
        previous = node
    prompt["9"] = {"class_type": "SaveImage", "inputs": {"images": [previous, 0], "filename_prefix": f"slow{color}"}}
    return prompt
