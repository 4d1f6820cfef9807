"""Loading model files into MODEL / CLIP / VAE values (what the loader nodes call).

* `load_checkpoint(path)`: a single-file SD1.x/SD2.x/SDXL checkpoint → (DiffusionModel, CLIP, VAE).
  The state dict is split by prefix: the UNet (`model.diffusion_model.`), the VAE
  (`first_stage_model.`) and the text encoders (`cond_stage_model.*` / `conditioner.embedders.*`),
  which go to `comfyserve.text.load_clip(state_dicts, family)` as `{"clip_l": {...}, "clip_g":
  {...}}` with the checkpoint prefixes stripped (see detect.split_text_encoders for the names).
* `load_diffusion_model(path)`: a bare UNet file (UNETLoader).
* `load_vae_file(path)`: a VAE file (VAELoader); "pixel_space" is handled by the node.
* `load_text_encoders(paths, family)`: text encoder files (CLIPLoader, DualCLIPLoader).

Devices and dtypes come from the server's `DevicePolicy` (comfyserve/models/devices.py,
ComfyUI's rules): fp32 on the CPU; on a GPU the UNet in fp16 where fp16 is sound (bf16 or fp32
otherwise, or as `--*-unet`/`--force-fp*` say), the VAE in bf16 where bf16 is native, else fp32.
Weights load onto the offload device; comfyserve/models/memory.py moves them when they run.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import torch

from comfyserve.models import detect, devices
from comfyserve.models.cache import MODELS
from comfyserve.models.detect import CheckpointInfo, ModelDetectionError
from comfyserve.models.diffusion import DiffusionModel, make_diffusion_model
from comfyserve.models.files import ModelFileError, load_state_dict
from comfyserve.models.unet import ModelLoadError, load_unet
from comfyserve.models.vae import VAE, load_vae

log = logging.getLogger(__name__)

FP8_DTYPES = {"fp8_e4m3fn": "float8_e4m3fn", "fp8_e4m3fn_fast": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2"}


class CheckpointError(RuntimeError):
    """A model file that cannot be loaded; the message names the file."""


# -- devices and dtypes ----------------------------------------------------------------------
# The policy (comfyserve/models/devices.py) decides; the memory manager moves models to the
# compute device when they run. These keep the loaders' (and diffusers_folder's) names.
def compute_device() -> torch.device:
    """Where loaders put fresh UNet/VAE weights: the offload device (the CPU) in normal and low
    VRAM modes, the compute device with `--highvram`/`--gpu-only` or on shared memory."""
    return devices.policy().unet_load_device


def vae_load_device() -> torch.device:
    return devices.policy().vae_offload_device


def unet_dtype() -> torch.dtype:
    return devices.policy().unet_dtype


def vae_dtype() -> torch.dtype:
    return devices.policy().vae_dtype


# -- CLIP seam -------------------------------------------------------------------------------
class PendingClip:
    """The text encoders of a checkpoint, split off and waiting for `comfyserve.text.load_clip`.

    Used only while the text encoder package does not provide `load_clip` yet: the first use
    of any CLIP method builds the real CLIP from the held state dicts."""

    def __init__(self, state_dicts: dict[str, dict[str, Any]], family: str, name: str = "") -> None:
        self.state_dicts = state_dicts
        self.family = family
        self.name = name
        self._clip: Any = None

    def resolve(self) -> Any:
        if self._clip is None:
            loader = _text_loader()
            if loader is None:
                raise RuntimeError(f"{self.name}: text encoders cannot run yet (comfyserve.text.load_clip is missing)")
            self._clip = loader(self.state_dicts, self.family)
        return self._clip

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_") or attr in ("state_dicts", "family", "name"):
            raise AttributeError(attr)
        return getattr(self.resolve(), attr)


def _text_loader() -> Any:
    try:
        module = importlib.import_module("comfyserve.text")
    except ImportError:
        return None
    return getattr(module, "load_clip", None)


def make_clip(state_dicts: dict[str, dict[str, Any]], family: str, name: str = "") -> Any:
    loader = _text_loader()
    if loader is None:
        log.warning("%s: comfyserve.text.load_clip is not available; CLIP is built on first use", name)
        return PendingClip(state_dicts, family, name)
    return loader(state_dicts, family)


# -- checkpoints -----------------------------------------------------------------------------
def _read(path: Path) -> dict[str, Any]:
    try:
        return load_state_dict(path)
    except ModelFileError as err:
        raise CheckpointError(str(err)) from err


def _detect(state_dict: dict[str, Any], path: Path) -> CheckpointInfo:
    try:
        return detect.detect_checkpoint(state_dict)
    except ModelDetectionError as err:
        raise CheckpointError(f"ERROR: Could not detect model type of: {path}\n{err}") from err


def _build_model(state_dict: dict[str, Any], info: CheckpointInfo, name: str, weight_dtype: str = "default") -> DiffusionModel:
    device = compute_device()
    dtype = unet_dtype()
    try:
        unet, key_map = load_unet(state_dict, info.unet, name, info.unet_prefix, dtype, device)
    except (ModelLoadError, ModelDetectionError) as err:
        raise CheckpointError(str(err)) from err
    if weight_dtype in FP8_DTYPES:
        storage = getattr(torch, FP8_DTYPES[weight_dtype])
        with torch.no_grad():
            for param in unet.parameters():
                if param.ndim >= 2:
                    param.data = param.data.to(storage).to(dtype)
    log.info("model %s: %s (%s prediction), UNet %s on %s", name, info.family, info.prediction, dtype, device)
    return make_diffusion_model(unet, info.family, info.prediction, key_map, name, info.zsnr, info)


def _build_vae(state_dict: dict[str, Any], info: CheckpointInfo | None, config: detect.VAEConfig, prefix: str, name: str) -> VAE:
    device = vae_load_device()
    try:
        return load_vae(state_dict, config, name, prefix, vae_dtype(), device)
    except (ModelLoadError, ModelDetectionError) as err:
        raise CheckpointError(str(err)) from err


def load_checkpoint_uncached(path: Path, output_vae: bool = True, output_clip: bool = True) -> tuple[Any, Any, Any]:
    name = path.name
    state_dict = _read(path)
    info = _detect(state_dict, path)
    model = _build_model(state_dict, info, name)
    vae = None
    if output_vae:
        if info.vae is None:
            log.warning("%s has no VAE", name)
        else:
            vae = _build_vae(state_dict, info, info.vae, info.vae_prefix or "", name)
    clip = None
    if output_clip:
        if not info.text_encoders:
            log.warning("%s has no text encoders (no CLIP/text encoder weights in checkpoint)", name)
        else:
            clip = make_clip(detect.split_text_encoders(state_dict, info.text_encoders), info.family, name)
    return model, clip, vae


def load_checkpoint(path: Path | str, output_vae: bool = True, output_clip: bool = True) -> tuple[Any, Any, Any]:
    """(MODEL, CLIP, VAE) of a checkpoint file, shared with every other loader of the same file."""
    path = Path(path)
    return MODELS.get("checkpoint", path, lambda: load_checkpoint_uncached(path, output_vae, output_clip),
                      output_vae, output_clip)


def load_diffusion_model(path: Path | str, weight_dtype: str = "default") -> DiffusionModel:
    """A bare UNet file (LDM layout, with or without the `model.diffusion_model.` prefix)."""
    path = Path(path)

    def load() -> DiffusionModel:
        state_dict = _read(path)
        info = _detect(state_dict, path)
        return _build_model(state_dict, info, path.name, weight_dtype)

    return MODELS.get("diffusion_model", path, load, weight_dtype)


def load_vae_file(path: Path | str) -> VAE:
    path = Path(path)

    def load() -> VAE:
        state_dict = _read(path)
        if "decoder.up_blocks.0.resnets.0.norm1.weight" in state_dict:  # diffusers layout
            from comfyserve.models.diffusers_folder import load_diffusers_vae_weights

            device = vae_load_device()
            try:
                return load_diffusers_vae_weights(state_dict, path.name, device, vae_dtype())
            except (ModelLoadError, KeyError) as err:
                raise CheckpointError(f"{path.name}: not a loadable diffusers VAE ({err})") from err
        prefix = detect.find_vae_prefix(state_dict)
        if prefix is None:
            raise CheckpointError(f"{path.name}: not a Stable Diffusion VAE (no encoder/decoder weights)")
        try:
            config = detect.detect_vae(state_dict, prefix)
        except ModelDetectionError as err:
            raise CheckpointError(f"{path.name}: {err}") from err
        return _build_vae(state_dict, None, config, prefix, path.name)

    return MODELS.get("vae", path, load)


# -- text encoder files ----------------------------------------------------------------------
def classify_text_encoder(state_dict: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """("clip_l" | "clip_h" | "clip_g", tensors) for a standalone text encoder file."""
    for prefix in ("", "text_encoder.", "cond_stage_model.transformer.", "transformer."):
        hf = detect.text_encoder_config(state_dict, "clip", prefix, "hf")
        if hf is not None:
            part = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
            if not any(k.startswith("text_model.") for k in part):
                part = {(k if k.startswith("text_projection") else f"text_model.{k}"): v for k, v in part.items()}
            return _clip_name(hf.hidden_size), part
    for prefix in ("", "model.", "cond_stage_model.model."):
        oc = detect.text_encoder_config(state_dict, "clip", prefix, "open_clip")
        if oc is not None:
            return _clip_name(oc.hidden_size), {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    raise CheckpointError("not a CLIP text encoder (no token embedding found)")


def _clip_name(hidden: int) -> str:
    names = {768: "clip_l", 1024: "clip_h", 1280: "clip_g"}
    if hidden not in names:
        raise CheckpointError(f"unsupported text encoder width {hidden} (CLIP-L 768, CLIP-H 1024, CLIP-G 1280)")
    return names[hidden]


SUPPORTED_CLIP_TYPES = {"stable_diffusion", "sdxl"}


def load_text_encoders(paths: list[Path | str], clip_type: str) -> Any:
    """CLIP from standalone text encoder files (CLIPLoader: one; DualCLIPLoader: two)."""
    paths = [Path(p) for p in paths]
    if clip_type not in SUPPORTED_CLIP_TYPES:
        raise CheckpointError(f"CLIP type {clip_type!r} is not supported (supported: {', '.join(sorted(SUPPORTED_CLIP_TYPES))})")

    def load() -> Any:
        parts: dict[str, dict[str, Any]] = {}
        for path in paths:
            try:
                name, tensors = classify_text_encoder(_read(path))
            except CheckpointError as err:
                raise CheckpointError(f"{path.name}: {err}") from err
            parts[name] = tensors
        if clip_type == "sdxl" or set(parts) == {"clip_l", "clip_g"}:
            family = "sdxl"
        elif set(parts) == {"clip_g"}:
            family = "sdxl_refiner"
        elif "clip_h" in parts:
            family = "sd2"
        else:
            family = "sd1"
        return make_clip(parts, family, "+".join(p.name for p in paths))

    key_path = paths[0]
    return MODELS.get("text_encoders", key_path, load, clip_type, tuple(MODELS.file_key(p) for p in paths))
