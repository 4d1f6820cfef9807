"""`DiffusionModel`: the MODEL value — a UNet, its sampling parameterisation and latent format.

`apply_model(x, sigma, c_crossattn, y=None, c_concat=None)` is ComfyUI's `BaseModel.apply_model`:

    xc  = model_sampling.calculate_input(sigma, x)          (then c_concat appended on channels)
    t   = model_sampling.timestep(sigma).float()
    out = unet(xc, t, encoder_hidden_states=c_crossattn, class_labels=y).sample.float()
    return model_sampling.calculate_denoised(sigma, out, x)

with inputs cast to the UNet's dtype and device and the result back on `x`'s. `y` is SDXL's ADM
vector exactly as ComfyUI builds it (pooled output + size embeddings); the UNet takes it through
diffusers' "projection" class embedding, which is ComfyUI's `label_emb` (see unet.py).

Clones share the UNet module. Weight patches (LoRA) live on a clone and are written into the
shared weights only while that clone runs: before a forward pass the weights are brought to the
running clone's patch set (restoring the originals first if another set is applied), as
ComfyUI's model management patches the model it loads. The cached original therefore never
changes its outputs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

# A patch: a tensor added to the weight (a "diff"); an object with ComfyUI's weight-adapter method
# `calculate_weight(weight, key, strength) -> new weight`; or a function of the (float32, already
# strength_model-scaled) weight that returns what to add (scaled by strength_patch here).
Patch = Any


@dataclass(frozen=True)
class LatentFormat:
    """How the model's latent space relates to the VAE's (ComfyUI's latent_formats)."""

    scale_factor: float
    latent_channels: int = 4

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        """VAE space → model space."""
        return latent * self.scale_factor

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        """Model space → VAE space."""
        return latent / self.scale_factor


SD15_LATENT = LatentFormat(0.18215)
SDXL_LATENT = LatentFormat(0.13025)


def latent_format_for(family: str) -> LatentFormat:
    return SDXL_LATENT if family in ("sdxl", "sdxl_refiner") else SD15_LATENT


class _SharedUNet:
    """What clones share: the module, the original weights of patched keys, who is applied."""

    def __init__(self, unet: torch.nn.Module, key_map: Mapping[str, str], name: str) -> None:
        self.unet = unet
        self.key_map = dict(key_map)  # LDM key (no prefix) -> diffusers key
        self.name = name
        self.backup: dict[str, torch.Tensor] = {}
        self.applied: object | None = None
        self.lock = threading.RLock()
        self._params: dict[str, torch.nn.Parameter] | None = None

    @property
    def params(self) -> dict[str, torch.nn.Parameter]:
        if self._params is None:
            self._params = dict(self.unet.named_parameters())
        return self._params

    def restore(self) -> None:
        for key, original in self.backup.items():
            param = self.params[key]
            param.data = original.to(param.device)
        self.backup.clear()
        self.applied = None


class DiffusionModel:
    """The MODEL value (see docs/MODEL_STACK.md)."""

    def __init__(self, unet: torch.nn.Module, model_sampling: Any, latent_format: LatentFormat, family: str,
                 prediction: str = "eps", key_map: Mapping[str, str] | None = None, name: str = "",
                 info: Any = None, _shared: _SharedUNet | None = None) -> None:
        self._shared = _shared or _SharedUNet(unet, key_map or {}, name)
        # A ModelSampling, or a zero-argument factory called on first use (so loading a checkpoint
        # does not need the sampling package until something samples).
        self._model_sampling = model_sampling
        self.latent_format = latent_format
        self.family = family
        self.prediction = prediction
        self.info = info
        self.name = name
        self.model_options: dict[str, Any] = {"transformer_options": {}}
        self.patches: dict[str, list[tuple[float, Patch, float]]] = {}
        self._patch_token: object | None = None

    # -- properties --------------------------------------------------------------------------
    @property
    def model_sampling(self) -> Any:
        if isinstance(self._model_sampling, _Deferred):
            self._model_sampling = self._model_sampling()
        return self._model_sampling

    @model_sampling.setter
    def model_sampling(self, value: Any) -> None:
        self._model_sampling = value

    @property
    def unet(self) -> torch.nn.Module:
        return self._shared.unet

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def in_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def concat_channels(self) -> int:
        """Extra input channels (inpainting models) that `c_concat` must supply."""
        return self.in_channels - self.latent_format.latent_channels

    def get_dtype(self) -> torch.dtype:
        return self.dtype

    def process_latent_in(self, latent: torch.Tensor) -> torch.Tensor:
        return self.latent_format.process_in(latent)

    def process_latent_out(self, latent: torch.Tensor) -> torch.Tensor:
        return self.latent_format.process_out(latent)

    def get_model_object(self, name: str) -> Any:
        if name == "model_sampling":
            return self.model_sampling
        if name == "latent_format":
            return self.latent_format
        return getattr(self.unet, name)

    # -- clones and patches ------------------------------------------------------------------
    def clone(self) -> DiffusionModel:
        other = DiffusionModel.__new__(DiffusionModel)
        other.__dict__.update(self.__dict__)
        other.model_options = _copy_options(self.model_options)
        other.patches = {k: list(v) for k, v in self.patches.items()}
        return other

    def is_clone(self, other: Any) -> bool:
        return isinstance(other, DiffusionModel) and other._shared is self._shared

    def set_model_sampling(self, model_sampling: Any) -> None:
        """Replace the sampling parameterisation (on a clone: ComfyUI's object patch)."""
        self.model_sampling = model_sampling

    def weight_key(self, key: str) -> str | None:
        """The UNet parameter a patch key names: a diffusers key, or an LDM key with or without
        `diffusion_model.` / `model.diffusion_model.`; None if it is not a UNet weight."""
        params = self._shared.params
        if key in params:
            return key
        for prefix in ("model.diffusion_model.", "diffusion_model."):
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        mapped = self._shared.key_map.get(key)
        return mapped if mapped in params else None

    def add_patches(self, patches: Mapping[str, Patch], strength_patch: float = 1.0,
                    strength_model: float = 1.0) -> list[str]:
        """Queue weight patches on this model (clone first!); returns the keys that were accepted.

        Each patched weight becomes `w * strength_model + strength_patch * delta` for every patch
        queued on it, in order, computed in float32 (ComfyUI's calculate_weight)."""
        accepted = []
        for key, patch in patches.items():
            target = self.weight_key(key)
            if target is None:
                continue
            self.patches.setdefault(target, []).append((float(strength_patch), patch, float(strength_model)))
            accepted.append(key)
        if accepted:
            self._patch_token = object()
        return accepted

    def lora_key_map(self) -> dict[str, str]:
        """Names LoRA files use for UNet weights → the parameter they patch (ComfyUI's
        model_lora_keys_unet): kohya `lora_unet_` names in diffusers and in LDM block terms,
        `diffusion_model.<ldm>` and `unet.<diffusers>` (PEFT) names, all without `.weight`."""
        out: dict[str, str] = {}
        params = self._shared.params
        for key in params:
            if not key.endswith(".weight"):
                continue
            stem = key[: -len(".weight")]
            out[f"lora_unet_{stem.replace('.', '_')}"] = key
            out[f"unet.{stem}"] = key
        for ldm, key in self._shared.key_map.items():
            if key in params and ldm.endswith(".weight"):
                stem = ldm[: -len(".weight")]
                out[f"lora_unet_{stem.replace('.', '_')}"] = key
                out[f"diffusion_model.{stem}"] = key
        return out

    def _ensure_weights(self) -> None:
        shared = self._shared
        if shared.applied is self._patch_token and (self._patch_token is not None or not shared.backup):
            return
        shared.restore()
        if not self.patches:
            return
        for key, queue in self.patches.items():
            param = shared.params[key]
            original = param.data
            param.data = calculate_weight(original, queue)
            # The unpatched weight waits on the CPU: on a GPU it would double the patched
            # weights' share of VRAM (and the memory estimate counts the module only).
            shared.backup[key] = original.to("cpu")
        shared.applied = self._patch_token

    def patch_weights(self) -> None:
        """Write this model's patches into the shared UNet now (apply_model does it as needed)."""
        with self._shared.lock:
            self._ensure_weights()

    # -- running -----------------------------------------------------------------------------
    def apply_model(self, x: torch.Tensor, sigma: torch.Tensor, c_crossattn: torch.Tensor | None = None,
                    y: torch.Tensor | None = None, c_concat: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """Denoised prediction for `x` (model space, [B,C,h,w]) at noise level `sigma` ([B])."""
        if c_crossattn is None:
            raise ValueError("apply_model needs c_crossattn (the text conditioning)")
        sampling = self.model_sampling
        sigma = torch.as_tensor(sigma, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        xc = sampling.calculate_input(sigma, x)
        if c_concat is not None:
            xc = torch.cat([xc, c_concat.to(xc)], dim=1)
        if xc.shape[1] != self.in_channels:
            raise ValueError(f"the UNet takes {self.in_channels} input channels, got {xc.shape[1]}"
                             + (" (inpainting models need c_concat)" if self.concat_channels else ""))
        t = sampling.timestep(sigma).float()
        device, dtype = self.device, self.dtype
        extra: dict[str, Any] = {}
        if y is not None:
            extra["class_labels"] = y.to(device=device, dtype=dtype)
        elif self.unet.config.class_embed_type is not None:
            raise ValueError(f"{self.family} models need the ADM vector y (pooled text output and sizes)")
        with self._shared.lock, torch.no_grad():
            self._ensure_weights()
            out = self.unet(
                xc.to(device=device, dtype=dtype),
                t.to(device),
                encoder_hidden_states=c_crossattn.to(device=device, dtype=dtype),
                return_dict=False,
                **extra,
            )[0]
        out = out.float().to(x.device)
        return sampling.calculate_denoised(sigma, out, x)

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.apply_model(*args, **kwargs)

    def to(self, device: torch.device | str) -> DiffusionModel:
        with self._shared.lock:
            self.unet.to(device)  # the unpatched backups stay on the CPU
        return self


def _copy_options(options: dict[str, Any]) -> dict[str, Any]:
    out = dict(options)
    if isinstance(out.get("transformer_options"), dict):
        out["transformer_options"] = dict(out["transformer_options"])
    return out


def calculate_weight(original: torch.Tensor, queue: list[tuple[float, Patch, float]]) -> torch.Tensor:
    """The patched weight: each (strength, patch, strength_model) in turn, in float32."""
    weight = original.float().clone()
    for strength, patch, strength_model in queue:
        if strength_model != 1.0:
            weight *= strength_model
        if hasattr(patch, "calculate_weight"):
            weight = patch.calculate_weight(weight, "", strength).to(torch.float32)
            continue
        delta = patch(weight) if callable(patch) else patch
        if delta is None:
            continue
        delta = torch.as_tensor(delta).to(device=weight.device, dtype=torch.float32)
        if delta.numel() != weight.numel():
            log.warning("patch of shape %s does not fit weight %s; skipped", list(delta.shape), list(weight.shape))
            continue
        weight += strength * delta.reshape(weight.shape)
    return weight.to(original.dtype)


class LowRankPatch:
    """A LoRA/LoCon patch: `delta = (alpha / rank) * up @ down` (with an optional `mid` for
    conv LoCon), reshaped to the weight, ComfyUI's "lora" weight adapter without DoRA."""

    def __init__(self, up: torch.Tensor, down: torch.Tensor, alpha: float | None = None,
                 mid: torch.Tensor | None = None) -> None:
        self.up, self.down, self.mid = up, down, mid
        rank = down.shape[0]
        self.scale = (float(alpha) / rank) if alpha is not None else 1.0

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        up = self.up.to(weight.device, torch.float32)
        down = self.down.to(weight.device, torch.float32)
        if self.mid is not None:
            mid = self.mid.to(weight.device, torch.float32)
            final_shape = [down.shape[1], down.shape[0], mid.shape[2], mid.shape[3]]
            down = torch.mm(down.transpose(0, 1).flatten(start_dim=1), mid.transpose(0, 1).flatten(start_dim=1))
            down = down.reshape(final_shape).transpose(0, 1)
        diff = torch.mm(up.flatten(start_dim=1), down.flatten(start_dim=1))
        return self.scale * diff.reshape(weight.shape)

    def calculate_weight(self, weight: torch.Tensor, key: str = "", strength: float = 1.0) -> torch.Tensor:
        """ComfyUI's weight-adapter form (what the text encoders' patching calls): the patched weight."""
        return weight + strength * self(weight.float()).to(weight.dtype)


def model_sampling_for(prediction: str, zsnr: bool = False) -> Any:
    """ComfyUI's ModelSamplingDiscrete for SD1/SD2/SDXL with the given parameterisation."""
    from comfyserve.sampling.model_sampling import make_model_sampling

    return make_model_sampling(prediction, zsnr=zsnr) if zsnr else make_model_sampling(prediction)


class _Deferred:
    """A model sampling to build on first use."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory

    def __call__(self) -> Any:
        return self.factory()


def make_diffusion_model(unet: torch.nn.Module, family: str, prediction: str, key_map: Mapping[str, str],
                         name: str = "", zsnr: bool = False, info: Any = None,
                         sampling_factory: Callable[[str, bool], Any] = model_sampling_for) -> DiffusionModel:
    sampling = _Deferred(lambda: sampling_factory(prediction, zsnr))
    return DiffusionModel(unet, sampling, latent_format_for(family), family, prediction, key_map, name, info)
