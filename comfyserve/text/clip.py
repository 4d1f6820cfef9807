"""The CLIP value that flows between nodes, and `load_clip`, the seam with the model loaders.

`load_clip(encoders, family)` takes the text-encoder state dicts by name — what
`split_text_encoders` cuts out of a checkpoint, or what CLIPLoader/DualCLIPLoader read from
stand-alone files — and returns a `CLIP`:

| family | encoders (dict keys) | tokens | cond | pooled |
|---|---|---|---|---|
| `sd1` | `clip_l` | `{"l"}` | clip-l last layer, final-normed [1,77k,768] | clip-l end-token state, unprojected [1,768] |
| `sd2` | `clip_h` | `{"h"}` | clip-h penultimate, final-normed [1,77k,1024] | projected [1,1024] |
| `sdxl` | `clip_l`, `clip_g` | `{"g","l"}` | clip-l penultimate ‖ clip-g penultimate, neither normed [1,77k,2048] | clip-g projected [1,1280] |
| `sdxl_refiner` | `clip_g` | `{"g"}` | clip-g penultimate, not normed [1,77k,1280] | clip-g projected [1,1280] |

Each state dict may be in transformers' layout (`text_model.*`, `text_projection.weight`),
ComfyUI's (`transformer.text_model.*`) or OpenCLIP's (`transformer.resblocks.*`,
`token_embedding.weight`, `positional_embedding`, `ln_final.*`, `text_projection`); it is
converted here. Weights are kept in float16 (ComfyUI's text-encoder dtype, also on the CPU),
all computation is float32; conditioning comes back on the CPU.

A CLIP is cheap to clone: clones share the loaded encoders and differ in the layer setting
(`clip_layer`), tokenizer options and weight patches (`add_patches`, for LoRA).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from comfyserve.text.convert import FAMILY_ENCODERS, to_transformers_layout
from comfyserve.text.encoder import ClipEncoder, EncoderSpec, build_encoder
from comfyserve.text.tokenizer import EncoderTokenizer, FamilyTokenizer

log = logging.getLogger(__name__)

FAMILIES = tuple(FAMILY_ENCODERS)

# ComfyUI's per-model constants (sd1_clip, sd2_clip, sdxl_clip).
_SD1_L = EncoderSpec("clip_l", "quick_gelu", pad_with_end=True, default_layer=None,
                     layer_norm_hidden_state=True, projected_pooled=False)
_SD2_H = EncoderSpec("clip_h", "gelu", pad_with_end=False, default_layer=-2,
                     layer_norm_hidden_state=True, projected_pooled=True)
_SDXL_L = EncoderSpec("clip_l", "quick_gelu", pad_with_end=True, default_layer=-2,
                      layer_norm_hidden_state=False, projected_pooled=True)
_SDXL_G = EncoderSpec("clip_g", "gelu", pad_with_end=False, default_layer=-2,
                      layer_norm_hidden_state=False, projected_pooled=True)

# family -> encoder specs in ComfyUI's tokenize/encode order
FAMILY_SPECS: dict[str, tuple[EncoderSpec, ...]] = {
    "sd1": (_SD1_L,),
    "sd2": (_SD2_H,),
    "sdxl": (_SDXL_G, _SDXL_L),
    "sdxl_refiner": (_SDXL_G,),
}

# Patch = (strength_patch, patch, strength_model), as ComfyUI's ModelPatcher stores them.
Patch = tuple[float, Any, float]


def calculate_weight(patches: Sequence[Patch], weight: torch.Tensor, key: str) -> torch.Tensor:
    """The patched value of one weight (float32 in, float32 out).

    A patch is a tensor (a difference added with `strength_patch`), an object with
    `calculate_weight(weight, key, strength)` (ComfyUI's weight adapters, e.g. LoRA), or a
    callable `(weight, strength) -> weight`. `strength_model` scales the weight first.
    """
    for strength, patch, strength_model in patches:
        if strength_model != 1.0:
            weight = weight * strength_model
        if torch.is_tensor(patch):
            weight = weight + strength * patch.to(device=weight.device, dtype=weight.dtype)
        elif hasattr(patch, "calculate_weight"):
            weight = patch.calculate_weight(weight, key, strength)
        elif callable(patch):
            weight = patch(weight, strength)
        else:
            raise TypeError(f"unsupported weight patch for {key}: {type(patch).__name__}")
    return weight


class TextEncoderStack:
    """ComfyUI's `cond_stage_model`: the encoders of one family, combined as the family does."""

    def __init__(self, family: str, encoders: dict[str, ClipEncoder]) -> None:
        self.family = family
        self.encoders = encoders  # name -> encoder, in FAMILY_SPECS order
        for name, encoder in encoders.items():
            setattr(self, name, encoder)

    def set_clip_options(self, options: Mapping[str, Any]) -> None:
        for encoder in self.encoders.values():
            encoder.set_clip_options(options)

    def reset_clip_options(self) -> None:
        for encoder in self.encoders.values():
            encoder.reset_clip_options()

    def encode_token_weights(self, tokens: Mapping[str, Any], layer_idx: int | None = None,
                             projected: bool = True, overrides: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
                             use_options: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(cond, pooled) for a tokens dict. With `use_options` (ComfyUI's calling convention)
        the encoders' current options decide the layer and projection; otherwise `layer_idx`
        (None: each encoder's default) and `projected` do."""
        outputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, encoder in self.encoders.items():
            if use_options:
                kwargs: dict[str, Any] = {}
            else:
                layer = encoder.spec.default_layer if layer_idx is None else layer_idx
                kwargs = {"layer_idx": layer, "projected": projected and encoder.spec.projected_pooled}
            outputs[name] = encoder.encode_token_weights(
                tokens[encoder.spec.token_key], overrides=(overrides or {}).get(name), **kwargs)
        if self.family == "sdxl":
            (g_out, g_pooled), (l_out, _) = outputs["clip_g"], outputs["clip_l"]
            cut = min(l_out.shape[1], g_out.shape[1])
            return torch.cat([l_out[:, :cut], g_out[:, :cut]], dim=-1), g_pooled
        return next(iter(outputs.values()))


class CLIP:
    """ComfyUI's CLIP object: tokenizer + text encoders + the per-clone settings."""

    def __init__(self, cond_stage_model: TextEncoderStack, tokenizer: FamilyTokenizer) -> None:
        self.cond_stage_model = cond_stage_model
        self.tokenizer = tokenizer
        self.layer_idx: int | None = None
        self.tokenizer_options: dict[str, Any] = {}
        self.patches: dict[str, list[Patch]] = {}
        self._patched: dict[str, dict[str, torch.Tensor]] | None = None

    @property
    def family(self) -> str:
        return self.cond_stage_model.family

    @property
    def device(self) -> torch.device:
        return next(iter(self.cond_stage_model.encoders.values())).device

    def clone(self) -> CLIP:
        n = CLIP(self.cond_stage_model, self.tokenizer)
        n.layer_idx = self.layer_idx
        n.tokenizer_options = dict(self.tokenizer_options)
        n.patches = {k: list(v) for k, v in self.patches.items()}
        n._patched = self._patched  # same patches, same patched weights
        return n

    def clip_layer(self, layer_idx: int | None) -> None:
        """Use the output of layer `layer_idx` (CLIPSetLastLayer; -1 = last). In place: clone first."""
        self.layer_idx = layer_idx

    def set_tokenizer_option(self, option_name: str, value: Any) -> None:
        self.tokenizer_options[option_name] = value

    # -- tokens --------------------------------------------------------------------------------
    def tokenize(self, text: str, return_word_ids: bool = False, **kwargs: Any) -> dict[str, list]:
        options = {**self.tokenizer_options, **kwargs.get("tokenizer_options", {})}
        if options:
            kwargs["tokenizer_options"] = options
        return self.tokenizer.tokenize_with_weights(text, return_word_ids, **kwargs)

    # -- weights (LoRA) ------------------------------------------------------------------------
    def weight_keys(self) -> list[str]:
        """Every weight by ComfyUI's name: `clip_l.transformer.text_model.encoder.layers.0.…`."""
        return [f"{name}.transformer.{w}" for name, enc in self.cond_stage_model.encoders.items()
                for w in enc.weight_names()]

    def add_patches(self, patches: Mapping[str, Any], strength_patch: float = 1.0,
                    strength_model: float = 1.0) -> list[str]:
        """Queue weight patches (ComfyUI's `add_patches`): keys are `weight_keys()` names; the
        value is a patch understood by `calculate_weight`. Returns the keys that exist."""
        known = set(self.weight_keys())
        added = []
        for key, patch in patches.items():
            if key in known:
                self.patches.setdefault(key, []).append((strength_patch, patch, strength_model))
                added.append(key)
        if added:
            self._patched = None
        return added

    def get_key_patches(self) -> dict[str, list[Patch]]:
        return {k: list(v) for k, v in self.patches.items()}

    def _overrides(self) -> dict[str, dict[str, torch.Tensor]]:
        # Patched weights, computed once per set of patches: float32 math, stored back in the
        # encoder's weight dtype (as ComfyUI writes patched weights into the float16 model).
        if not self.patches:
            return {}
        if self._patched is None:
            patched: dict[str, dict[str, torch.Tensor]] = {}
            encoders = self.cond_stage_model.encoders
            # Kept on the offload device: the encoder may leave the GPU, these must not stay.
            keep_on = default_device()
            for key, patch_list in self.patches.items():
                name, _, rest = key.partition(".transformer.")
                base = encoders[name].parameter(rest)
                value = calculate_weight(patch_list, base.to(torch.float32), key)
                patched.setdefault(name, {})[rest] = value.to(device=keep_on, dtype=base.dtype)
            self._patched = patched
        return self._patched

    # -- encoding ------------------------------------------------------------------------------
    def encode_from_tokens(self, tokens: Mapping[str, Any], return_pooled: bool | str = False,
                           return_dict: bool = False) -> Any:
        projected = return_pooled != "unprojected"
        _load_for_use(self)
        cond, pooled = self.cond_stage_model.encode_token_weights(
            tokens, layer_idx=self.layer_idx, projected=projected, overrides=self._overrides(), use_options=False)
        if return_dict:
            return {"cond": cond, "pooled_output": pooled}
        if return_pooled:
            return cond, pooled
        return cond

    def encode_from_tokens_scheduled(self, tokens: Mapping[str, Any], unprojected: bool = False,
                                     add_dict: Mapping[str, Any] | None = None,
                                     show_pbar: bool = True) -> list[list[Any]]:
        """CONDITIONING: `[[cond, {"pooled_output": pooled, **add_dict}]]`."""
        out = self.encode_from_tokens(tokens, return_pooled="unprojected" if unprojected else True,
                                      return_dict=True)
        cond = out.pop("cond")
        out.update(add_dict or {})
        return [[cond, out]]

    def encode(self, text: str) -> torch.Tensor:
        return self.encode_from_tokens(self.tokenize(text))

    def load_model(self, tokens: Any = None) -> CLIP:
        """Move the encoders to the compute device now (ComfyUI's name; encoding does it too)."""
        _load_for_use(self)
        return self

    def to(self, device: torch.device | str) -> CLIP:
        """Move the encoders (shared with every clone) to `device`."""
        for encoder in self.cond_stage_model.encoders.values():
            encoder.to(device)
        return self


def default_device() -> torch.device:
    """Where text encoders load: their offload device (the CPU unless `--gpu-only`); the memory
    manager moves them to the compute device when they encode."""
    from comfyserve.models import devices

    return devices.policy().text_encoder_offload_device


def default_dtype() -> torch.dtype:
    """fp16, ComfyUI's text-encoder storage dtype on every device (`--*-text-enc` change it)."""
    from comfyserve.models import devices

    return devices.policy().text_encoder_dtype


def _load_for_use(clip: CLIP) -> None:
    from comfyserve.models import memory

    memory.load_models([clip])


def load_clip(text_encoder_state_dicts: Mapping[str, Mapping[str, torch.Tensor]], family: str,
              device: torch.device | str | None = None, dtype: torch.dtype | None = None,
              embedding_directories: Sequence[Path | str] | None = None,
              heads: Mapping[str, int] | None = None) -> CLIP:
    """A CLIP for `family` from its encoders' state dicts (see the module docstring).

    `embedding_directories` defaults to the server's embeddings folders (looked up at tokenize
    time); `heads` overrides the 64-wide-head assumption per encoder (tests with tiny models).
    """
    if family not in FAMILY_SPECS:
        raise ValueError(f"unknown text encoder family {family!r}; expected one of {', '.join(FAMILIES)}")
    specs = FAMILY_SPECS[family]
    missing = [s.name for s in specs if s.name not in text_encoder_state_dicts]
    if missing:
        raise ValueError(f"{family} needs text encoders {[s.name for s in specs]}; missing {missing}")
    extra = sorted(set(text_encoder_state_dicts) - {s.name for s in specs})
    if extra:
        log.warning("%s: text encoders %s are not used by this model family", family, extra)
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype if dtype is not None else default_dtype()
    encoders: dict[str, ClipEncoder] = {}
    tokenizers: dict[str, EncoderTokenizer] = {}
    for spec in specs:
        sd = to_transformers_layout(dict(text_encoder_state_dicts[spec.name]))
        encoder = build_encoder(spec, sd, device=device, dtype=dtype, heads=(heads or {}).get(spec.name))
        encoders[spec.name] = encoder
        tokenizers[spec.name] = EncoderTokenizer(
            embedding_key=spec.name, embedding_size=encoder.shape.width, pad_with_end=spec.pad_with_end,
            max_length=min(77, encoder.shape.positions), embedding_directories=embedding_directories)
    return CLIP(TextEncoderStack(family, encoders), FamilyTokenizer(tokenizers))

