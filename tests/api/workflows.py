"""Prompts the black-box tests post: tiny ones, a slow one (a chain of image resamples) and a
text-to-image run of the generated sd15-mini checkpoint."""

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


def sd_txt2img(width: int = 64, height: int = 64, steps: int = 2, seed: int = 11) -> dict:
    """sd15-mini text to image (KSampler, euler, normal, cfg 6), decoded into a PreviewImage."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15-mini.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "seed": seed, "steps": steps, "cfg": 6.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    }
