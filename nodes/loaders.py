"""ComfyUI's model loader nodes: checkpoints, bare UNets, VAEs, text encoders, diffusers folders.

Names, inputs, categories and tooltips are ComfyUI 0.8's. The model code (diffusers,
transformers) is imported only when a node runs, so loading the node modules stays cheap.
Loaded models are shared between nodes and prompts through comfyserve.models.cache.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from comfyserve import runtime

log = logging.getLogger(__name__)

CLIP_TYPES = ["stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
              "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image", "flux2", "ovis"]
DUAL_CLIP_TYPES = ["sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image", "hunyuan_video_15",
                   "kandinsky5", "kandinsky5_image", "ltxv", "newbie"]
UNET_WEIGHT_DTYPES = ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]
DEVICE_OPTION = (["default", "cpu"], {"advanced": True})

CLIP_LOADER_DESCRIPTION = (
    "[Recipes]\n\nstable_diffusion: clip-l\nstable_cascade: clip-g\nsd3: t5 xxl/ clip-g / clip-l\n"
    "stable_audio: t5 base\nmochi: t5 xxl\ncosmos: old t5 xxl\nlumina2: gemma 2 2B\nwan: umt5 xxl\n"
    " hidream: llama-3.1 (Recommend) or t5\nomnigen2: qwen vl 2.5 3B"
)
DUAL_CLIP_LOADER_DESCRIPTION = (
    "[Recipes]\n\nsdxl: clip-l, clip-g\nsd3: clip-l, clip-g / clip-l, t5 / clip-g, t5\nflux: clip-l, t5\n"
    "hidream: at least one of t5 or llama, recommended t5 and llama\nhunyuan_image: qwen2.5vl 7b and byt5 small\n"
    "newbie: gemma-3-4b-it, jina clip v2"
)


def filename_list(folder: str) -> list[str]:
    return runtime.folders().filename_list(folder)


def full_path_or_raise(folder: str, filename: str) -> Path:
    """The file `filename` of model folder `folder` (ComfyUI's get_full_path_or_raise)."""
    path = runtime.folders().full_path(folder, filename)
    if path is None:
        raise FileNotFoundError(f"Model in folder '{folder}' with filename '{filename}' not found.")
    return path


def _models():
    from comfyserve.models import checkpoint

    return checkpoint


class CheckpointLoaderSimple:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"ckpt_name": (filename_list("checkpoints"),
                                           {"tooltip": "The name of the checkpoint (model) to load."})}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    OUTPUT_TOOLTIPS = ("The model used for denoising latents.",
                       "The CLIP model used for encoding text prompts.",
                       "The VAE model used for encoding and decoding images to and from latent space.")
    FUNCTION = "load_checkpoint"
    CATEGORY = "loaders"
    DESCRIPTION = "Loads a diffusion model checkpoint, diffusion models are used to denoise latents."

    def load_checkpoint(self, ckpt_name: str) -> tuple[Any, Any, Any]:
        path = full_path_or_raise("checkpoints", ckpt_name)
        return _models().load_checkpoint(path, output_vae=True, output_clip=True)


class CheckpointLoader:
    """Deprecated: loads like CheckpointLoaderSimple, then applies the two things ComfyUI still
    reads from the yaml: `parameterization: v` (v-prediction sampling) and the text encoder's
    `layer_idx` (CLIP skip)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"config_name": (filename_list("configs"),),
                             "ckpt_name": (filename_list("checkpoints"),)}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load_checkpoint"
    CATEGORY = "advanced/loaders"
    DEPRECATED = True

    def load_checkpoint(self, config_name: str, ckpt_name: str) -> tuple[Any, Any, Any]:
        log.warning("Warning: The load checkpoint with config function is deprecated and will eventually be "
                    "removed, please use the other one.")
        ckpt_path = full_path_or_raise("checkpoints", ckpt_name)
        config_path = runtime.folders().full_path("configs", config_name)
        model, clip, vae = _models().load_checkpoint(ckpt_path, output_vae=True, output_clip=True)
        if config_path is None:
            raise FileNotFoundError(f"Model in folder 'configs' with filename '{config_name}' not found.")
        import yaml

        with open(config_path, encoding="utf-8") as stream:
            config = yaml.safe_load(stream) or {}
        params = (config.get("model") or {}).get("params") or {}
        if params.get("parameterization") == "v":
            from comfyserve.models.diffusion import model_sampling_for

            model = model.clone()
            model.set_model_sampling(model_sampling_for("v"))
        layer_idx = ((params.get("cond_stage_config") or {}).get("params") or {}).get("layer_idx")
        if layer_idx is not None and clip is not None:
            clip = clip.clone()
            clip.clip_layer(layer_idx)
        return model, clip, vae


class DiffusersLoader:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model_path": (diffusers_folders(),)}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load_checkpoint"
    CATEGORY = "advanced/loaders/deprecated"

    def load_checkpoint(self, model_path: str, output_vae: bool = True, output_clip: bool = True) -> tuple[Any, Any, Any]:
        folder = resolve_diffusers_folder(model_path)
        from comfyserve.models.diffusers_folder import load_diffusers_folder

        return load_diffusers_folder(folder, output_vae=output_vae, output_clip=output_clip)


def _diffusers_roots() -> list[Path]:
    folder = runtime.folders().model_folder("diffusers")
    return list(folder.paths) if folder else []


def diffusers_folders() -> list[str]:
    """Folders (relative to a diffusers root) that hold a model_index.json, walked as ComfyUI does."""
    found: list[str] = []
    for root in _diffusers_roots():
        if not root.exists():
            continue
        for dirpath, _dirs, files in os.walk(root, followlinks=True):
            if "model_index.json" in files:
                found.append(os.path.relpath(dirpath, start=root))
    return found


def resolve_diffusers_folder(model_path: str) -> Path:
    from comfyserve.paths import PathEscape, model_join

    for root in _diffusers_roots():
        try:
            candidate = model_join(root, model_path)
        except PathEscape:
            break
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"Model in folder 'diffusers' with filename '{model_path}' not found.")


class VAELoader:
    @staticmethod
    def vae_list() -> list[str]:
        # ComfyUI adds the TAESD approximations when both halves are in models/vae_approx; those
        # are not supported here, so only the files and the pixel-space pass-through are offered.
        return [*filename_list("vae"), "pixel_space"]

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"vae_name": (cls.vae_list(),)}}

    RETURN_TYPES = ("VAE",)
    FUNCTION = "load_vae"
    CATEGORY = "loaders"

    def load_vae(self, vae_name: str) -> tuple[Any]:
        if vae_name == "pixel_space":
            from comfyserve.models.vae import PixelSpaceVAE

            return (PixelSpaceVAE(),)
        path = full_path_or_raise("vae", vae_name)
        vae = _models().load_vae_file(path)
        vae.throw_exception_if_invalid()
        return (vae,)


class UNETLoader:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"unet_name": (filename_list("diffusion_models"),),
                             "weight_dtype": (UNET_WEIGHT_DTYPES,)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_unet"
    CATEGORY = "advanced/loaders"

    def load_unet(self, unet_name: str, weight_dtype: str) -> tuple[Any]:
        path = full_path_or_raise("diffusion_models", unet_name)
        return (_models().load_diffusion_model(path, weight_dtype),)


class CLIPLoader:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"clip_name": (filename_list("text_encoders"),), "type": (CLIP_TYPES,)},
                "optional": {"device": DEVICE_OPTION}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load_clip"
    CATEGORY = "advanced/loaders"
    DESCRIPTION = CLIP_LOADER_DESCRIPTION

    def load_clip(self, clip_name: str, type: str = "stable_diffusion", device: str = "default") -> tuple[Any]:
        path = full_path_or_raise("text_encoders", clip_name)
        return (_models().load_text_encoders([path], type),)


class DualCLIPLoader:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"clip_name1": (filename_list("text_encoders"),),
                             "clip_name2": (filename_list("text_encoders"),),
                             "type": (DUAL_CLIP_TYPES,)},
                "optional": {"device": DEVICE_OPTION}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load_clip"
    CATEGORY = "advanced/loaders"
    DESCRIPTION = DUAL_CLIP_LOADER_DESCRIPTION

    def load_clip(self, clip_name1: str, clip_name2: str, type: str, device: str = "default") -> tuple[Any]:
        paths = [full_path_or_raise("text_encoders", clip_name1), full_path_or_raise("text_encoders", clip_name2)]
        return (_models().load_text_encoders(paths, type),)


NODE_CLASS_MAPPINGS = {
    "CheckpointLoaderSimple": CheckpointLoaderSimple,
    "CheckpointLoader": CheckpointLoader,
    "DiffusersLoader": DiffusersLoader,
    "VAELoader": VAELoader,
    "UNETLoader": UNETLoader,
    "CLIPLoader": CLIPLoader,
    "DualCLIPLoader": DualCLIPLoader,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CheckpointLoaderSimple": "Load Checkpoint",
    "CheckpointLoader": "Load Checkpoint With Config (DEPRECATED)",
    "VAELoader": "Load VAE",
    "UNETLoader": "Load Diffusion Model",
    "CLIPLoader": "Load CLIP",
}
