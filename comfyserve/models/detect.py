"""What a checkpoint is, from its keys and tensor shapes alone (ComfyUI's model detection).

Nothing is looked up by file name or assumed from a known size: the UNet's channel counts,
levels, residual blocks per level, attention depth per block, cross-attention width and
projection kind are read off the shapes of the tensors that carry them, the way ComfyUI's
`model_detection.detect_unet_config` does. The family then follows from what the UNet
conditions on (cross-attention width, ADM vector), and the prediction type from ComfyUI's
rules (supported_models.py):

* SD1.x: 768-wide cross attention from CLIP-L, no ADM input; 8 heads per transformer; eps.
* SD2.x: 1024-wide cross attention (OpenCLIP-H), 64 channels per head, attention upcast to
  fp32. v-prediction (the 768-v models) is recognised as ComfyUI does, by the spread of one
  weight: the population standard deviation of
  `output_blocks.11.1.transformer_blocks.0.norm1.bias` above 0.09 means v (only for 4-channel
  inputs; inpainting models are eps). A model without that block is eps.
* SDXL base: 2048-wide cross attention (CLIP-L + OpenCLIP-G) and an ADM vector (pooled text
  + size embeddings); the refiner: 1280-wide cross attention (OpenCLIP-G only). Eps, unless the
  file carries ComfyUI's `v_pred` marker key (and `ztsnr` for zero-terminal-SNR schedules).

`detect_checkpoint(state_dict)` returns a `CheckpointInfo` with the UNet, VAE and text encoder
configs; `ModelDetectionError` explains what did not fit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIXES = ("first_stage_model.", "vae.")

FAMILIES = ("sd1", "sd2", "sdxl", "sdxl_refiner")
# SD1/SD2 latents are scaled by 0.18215 into model space, SDXL's by 0.13025.
LATENT_SCALE = {"sd1": 0.18215, "sd2": 0.18215, "sdxl": 0.13025, "sdxl_refiner": 0.13025}
# The width of one attention head for the families that count heads by channels (ComfyUI's default).
HEAD_CHANNELS = 64
# SD1.x counts heads instead: 8 per transformer, whatever its width.
SD1_HEADS = 8
# ComfyUI's threshold on the norm1 bias spread that marks an SD2 model as v-prediction.
V_PRED_STD_THRESHOLD = 0.09
V_PRED_PROBE_KEY = "output_blocks.11.1.transformer_blocks.0.norm1.bias"


class ModelDetectionError(ValueError):
    """The state dict is not a model this server can run (or not a model at all)."""


# -- configs ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class UNetConfig:
    """The LDM UNet's shape, in ComfyUI's terms (`detect_unet_config`)."""

    in_channels: int
    out_channels: int
    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: tuple[int, ...]
    # Transformer depth after each input-side residual block (0: no attention), in block order.
    transformer_depth: tuple[int, ...]
    # The same for every output block, in block order (top of the UNet last).
    transformer_depth_output: tuple[int, ...]
    # Depth of the middle block's transformer; -1: middle block without attention; -2: none.
    transformer_depth_middle: int
    context_dim: int | None
    use_linear_in_transformer: bool
    adm_in_channels: int | None
    num_heads: int = -1
    num_head_channels: int = -1
    upcast_attention: bool = False

    @property
    def levels(self) -> int:
        return len(self.channel_mult)

    def level_channels(self, level: int) -> int:
        return self.model_channels * self.channel_mult[level]

    def heads(self, level: int) -> int:
        """Attention heads of the transformers at `level` (ComfyUI: a head count, or channels/64)."""
        channels = self.level_channels(level)
        if self.num_head_channels != -1:
            return max(1, channels // self.num_head_channels)
        return self.num_heads

    def input_depths(self, level: int) -> tuple[int, ...]:
        start = sum(self.num_res_blocks[:level])
        return self.transformer_depth[start:start + self.num_res_blocks[level]]

    def output_depths(self, level: int) -> tuple[int, ...]:
        """Depths of the output blocks that work at `level` (levels count from the top)."""
        blocks = [n + 1 for n in self.num_res_blocks]
        end = len(self.transformer_depth_output) - sum(blocks[:level])
        return self.transformer_depth_output[end - blocks[level]:end]


@dataclass(frozen=True)
class VAEConfig:
    """The LDM first-stage autoencoder's shape (its `ddconfig`)."""

    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    z_channels: int
    embed_dim: int
    in_channels: int
    out_ch: int
    double_z: bool
    mid_attention: bool

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class TextEncoderConfig:
    """One text encoder found in a checkpoint, and where its tensors are."""

    name: str  # clip_l | clip_h | clip_g
    prefix: str  # key prefix in the checkpoint, stripped when the encoder is split off
    layout: str  # "hf" (transformers CLIPTextModel names) | "open_clip"
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    projection_dim: int | None


@dataclass
class CheckpointInfo:
    family: str
    prediction: str  # eps | v
    unet: UNetConfig
    unet_prefix: str
    vae: VAEConfig | None = None
    vae_prefix: str | None = None
    text_encoders: list[TextEncoderConfig] = field(default_factory=list)
    zsnr: bool = False

    @property
    def latent_scale(self) -> float:
        return LATENT_SCALE[self.family]


# -- helpers ---------------------------------------------------------------------------------
def _count_indices(keys: list[str], prefix: str) -> int:
    """How many consecutive `prefix{i}.` groups exist, from 0 (ComfyUI's count_blocks)."""
    found = set()
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    for key in keys:
        match = pattern.match(key)
        if match:
            found.add(int(match.group(1)))
    count = 0
    while count in found:
        count += 1
    return count


def _shape(state_dict: Mapping[str, Any], key: str) -> tuple[int, ...]:
    return tuple(state_dict[key].shape)


def _transformer_at(state_dict: Mapping[str, Any], keys: list[str], prefix: str) -> tuple[int, int | None, bool] | None:
    """(depth, context_dim, linear projection) of the SpatialTransformer at `prefix`, if there is one."""
    if f"{prefix}proj_in.weight" not in state_dict:
        return None
    depth = _count_indices(keys, f"{prefix}transformer_blocks.")
    context_key = f"{prefix}transformer_blocks.0.attn2.to_k.weight"
    context_dim = _shape(state_dict, context_key)[1] if context_key in state_dict else None
    linear = len(_shape(state_dict, f"{prefix}proj_in.weight")) == 2
    return depth, context_dim, linear


# -- the UNet --------------------------------------------------------------------------------
def find_unet_prefix(state_dict: Mapping[str, Any]) -> str | None:
    """Where the LDM UNet's keys start: `model.diffusion_model.` in checkpoints, nothing in
    bare UNet files; None if there is no LDM UNet."""
    for prefix in (UNET_PREFIX, ""):
        if f"{prefix}input_blocks.0.0.weight" in state_dict:
            return prefix
    return None


def detect_unet(state_dict: Mapping[str, Any], prefix: str = UNET_PREFIX) -> UNetConfig:
    """The UNet's configuration from the shapes of its tensors (keys under `prefix`)."""
    keys = [k[len(prefix):] for k in state_dict if k.startswith(prefix)]
    sd = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if "input_blocks.0.0.weight" not in sd:
        raise ModelDetectionError("no LDM UNet found (input_blocks.0.0.weight is missing)")
    if any(k.startswith(("input_blocks.1.0.time_stack", "time_mixer")) or ".time_stack." in k for k in keys):
        raise ModelDetectionError("video UNets (temporal layers) are not supported")

    model_channels, in_channels = _shape(sd, "input_blocks.0.0.weight")[:2]
    out_channels = _shape(sd, "out.2.weight")[0] if "out.2.weight" in sd else 4
    adm = _shape(sd, "label_emb.0.0.weight")[1] if "label_emb.0.0.weight" in sd else None
    if "label_emb.weight" in sd:
        raise ModelDetectionError("class-conditional UNets (label_emb.weight) are not supported")

    num_res_blocks: list[int] = []
    channel_mult: list[int] = []
    transformer_depth: list[int] = []
    context_dim: int | None = None
    linear = False
    blocks_in_level = 0
    mult = 0
    input_count = _count_indices(keys, "input_blocks.")
    for index in range(1, input_count):
        block = f"input_blocks.{index}."
        if f"{block}0.op.weight" in sd or f"{block}0.op.bias" in sd:  # downsampler: the level ends
            num_res_blocks.append(blocks_in_level)
            channel_mult.append(mult)
            blocks_in_level = 0
            continue
        if f"{block}0.in_layers.0.weight" not in sd:
            raise ModelDetectionError(f"input block {index} is neither a residual block nor a downsampler")
        blocks_in_level += 1
        out = _shape(sd, f"{block}0.out_layers.3.weight")[0]
        if out % model_channels:
            raise ModelDetectionError(f"input block {index} has {out} channels, not a multiple of {model_channels}")
        mult = out // model_channels
        transformer = _transformer_at(sd, keys, f"{block}1.")
        transformer_depth.append(transformer[0] if transformer else 0)
        if transformer and context_dim is None:
            context_dim, linear = transformer[1], transformer[2]
    num_res_blocks.append(blocks_in_level)
    channel_mult.append(mult)

    output_depth: list[int] = []
    for index in range(_count_indices(keys, "output_blocks.")):
        if f"output_blocks.{index}.0.in_layers.0.weight" not in sd:
            raise ModelDetectionError(f"output block {index} has no residual block")
        transformer = _transformer_at(sd, keys, f"output_blocks.{index}.1.")
        output_depth.append(transformer[0] if transformer else 0)

    middle = _transformer_at(sd, keys, "middle_block.1.")
    if middle is not None:
        depth_middle = middle[0]
        if context_dim is None:
            context_dim, linear = middle[1], middle[2]
    elif "middle_block.0.in_layers.0.weight" in sd:
        depth_middle = -1
    else:
        depth_middle = -2

    return UNetConfig(
        in_channels=in_channels,
        out_channels=out_channels,
        model_channels=model_channels,
        channel_mult=tuple(channel_mult),
        num_res_blocks=tuple(num_res_blocks),
        transformer_depth=tuple(transformer_depth),
        transformer_depth_output=tuple(output_depth),
        transformer_depth_middle=depth_middle,
        context_dim=context_dim,
        use_linear_in_transformer=linear,
        adm_in_channels=adm,
    )


def unet_family(unet: UNetConfig) -> str:
    """sd1 / sd2 / sdxl / sdxl_refiner from what the UNet conditions on."""
    context = unet.context_dim
    if unet.adm_in_channels is not None:
        if context == 2048:
            return "sdxl"
        if context == 1280:
            return "sdxl_refiner"
        if context == 1024:
            raise ModelDetectionError(
                f"SD2.1 unCLIP models (ADM input of {unet.adm_in_channels}) are not supported")
        raise ModelDetectionError(
            f"unknown UNet with an ADM input of {unet.adm_in_channels} and {context}-wide cross attention")
    if context == 768 and not unet.use_linear_in_transformer:
        return "sd1"
    if context == 1024:
        return "sd2"
    if context is None:
        raise ModelDetectionError("the UNet has no cross attention: not a text-to-image Stable Diffusion model")
    raise ModelDetectionError(f"unknown UNet with {context}-wide cross attention")


def with_family_settings(unet: UNetConfig, family: str) -> UNetConfig:
    """The attention settings ComfyUI's model classes add to the detected shape."""
    from dataclasses import replace

    if family == "sd1":
        return replace(unet, num_heads=SD1_HEADS, num_head_channels=-1, upcast_attention=False)
    if family == "sd2":
        return replace(unet, num_heads=-1, num_head_channels=HEAD_CHANNELS, upcast_attention=True)
    return replace(unet, num_heads=-1, num_head_channels=HEAD_CHANNELS, upcast_attention=False)


def detect_prediction(state_dict: Mapping[str, Any], family: str, unet: UNetConfig, prefix: str) -> tuple[str, bool]:
    """(prediction, zsnr) by ComfyUI's rules; see the module docstring."""
    if family == "sd2":
        if unet.in_channels == 4:
            probe = state_dict.get(prefix + V_PRED_PROBE_KEY)
            if probe is not None and not probe.is_meta and float(probe.float().std(unbiased=False)) > V_PRED_STD_THRESHOLD:
                return "v", False
        return "eps", False
    if family == "sdxl":
        if "edm_mean" in state_dict or "edm_vpred.sigma_max" in state_dict:
            raise ModelDetectionError("EDM-parameterised SDXL models (Playground 2.5, EDM v-pred) are not supported")
        if "v_pred" in state_dict:
            return "v", "ztsnr" in state_dict
    return "eps", False


# -- the VAE ---------------------------------------------------------------------------------
def find_vae_prefix(state_dict: Mapping[str, Any]) -> str | None:
    for prefix in (*VAE_PREFIXES, ""):
        if f"{prefix}decoder.conv_in.weight" in state_dict and f"{prefix}encoder.conv_in.weight" in state_dict:
            return prefix
    return None


def detect_vae(state_dict: Mapping[str, Any], prefix: str) -> VAEConfig:
    """The autoencoder's ddconfig from the shapes under `prefix`."""
    sd = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    keys = list(sd)
    for needed in ("encoder.conv_in.weight", "encoder.conv_out.weight", "decoder.conv_in.weight",
                   "decoder.conv_out.weight", "quant_conv.weight", "post_quant_conv.weight"):
        if needed not in sd:
            raise ModelDetectionError(f"the VAE lacks {needed}")
    if any(".attn." in k and k.startswith(("encoder.down.", "decoder.up.")) for k in keys):
        raise ModelDetectionError("VAEs with attention inside the resolution levels are not supported")
    ch, in_channels = _shape(sd, "encoder.conv_in.weight")[:2]
    levels = _count_indices(keys, "encoder.down.")
    ch_mult = []
    for level in range(levels):
        ch_mult.append(_shape(sd, f"encoder.down.{level}.block.0.conv2.weight")[0] // ch)
    num_res_blocks = _count_indices(keys, "encoder.down.0.block.")
    z_channels = _shape(sd, "decoder.conv_in.weight")[1]
    moments = _shape(sd, "encoder.conv_out.weight")[0]
    return VAEConfig(
        ch=ch,
        ch_mult=tuple(ch_mult),
        num_res_blocks=num_res_blocks,
        z_channels=z_channels,
        embed_dim=_shape(sd, "post_quant_conv.weight")[1],
        in_channels=in_channels,
        out_ch=_shape(sd, "decoder.conv_out.weight")[0],
        double_z=moments == 2 * z_channels,
        mid_attention="encoder.mid.attn_1.q.weight" in sd,
    )


# -- text encoders ---------------------------------------------------------------------------
# Where each family's text encoders sit in an LDM/SGM checkpoint: (name, prefix, layout).
TEXT_ENCODER_PLACES = {
    "sd1": [("clip_l", "cond_stage_model.transformer.", "hf")],
    "sd2": [("clip_h", "cond_stage_model.model.", "open_clip"), ("clip_h", "conditioner.embedders.0.model.", "open_clip")],
    "sdxl": [("clip_l", "conditioner.embedders.0.transformer.", "hf"), ("clip_g", "conditioner.embedders.1.model.", "open_clip")],
    "sdxl_refiner": [("clip_g", "conditioner.embedders.0.model.", "open_clip")],
}


def text_encoder_config(state_dict: Mapping[str, Any], name: str, prefix: str, layout: str) -> TextEncoderConfig | None:
    """The shape of the text encoder under `prefix`, or None if it is not there."""
    keys = [k[len(prefix):] for k in state_dict if k.startswith(prefix)]
    if not keys:
        return None
    sd = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if layout == "hf":
        base = "text_model." if any(k.startswith("text_model.") for k in keys) else ""
        token_key = f"{base}embeddings.token_embedding.weight"
        if token_key not in sd:
            return None
        vocab, hidden = _shape(sd, token_key)
        layers = _count_indices(keys, f"{base}encoder.layers.")
        intermediate = _shape(sd, f"{base}encoder.layers.0.mlp.fc1.weight")[0]
        positions = _shape(sd, f"{base}embeddings.position_embedding.weight")[0]
        projection = _shape(sd, "text_projection.weight")[0] if "text_projection.weight" in sd else None
    else:
        if "token_embedding.weight" not in sd:
            return None
        vocab, hidden = _shape(sd, "token_embedding.weight")
        layers = _count_indices(keys, "transformer.resblocks.")
        intermediate = _shape(sd, "transformer.resblocks.0.mlp.c_fc.weight")[0]
        positions = _shape(sd, "positional_embedding")[0]
        projection = _shape(sd, "text_projection")[1] if "text_projection" in sd else None
    return TextEncoderConfig(
        name=name, prefix=prefix, layout=layout, hidden_size=hidden, num_layers=layers,
        num_heads=max(1, hidden // HEAD_CHANNELS), intermediate_size=intermediate, vocab_size=vocab,
        max_positions=positions, projection_dim=projection,
    )


def detect_text_encoders(state_dict: Mapping[str, Any], family: str) -> list[TextEncoderConfig]:
    found: list[TextEncoderConfig] = []
    names: set[str] = set()
    for name, prefix, layout in TEXT_ENCODER_PLACES[family]:
        if name in names:
            continue
        config = text_encoder_config(state_dict, name, prefix, layout)
        if config is not None:
            found.append(config)
            names.add(name)
    return found


def split_text_encoders(state_dict: Mapping[str, Any], encoders: list[TextEncoderConfig]) -> dict[str, dict[str, Any]]:
    """Each text encoder's tensors with its checkpoint prefix stripped: `{"clip_l": {...}, …}`.

    HF-layout encoders (CLIP-L) come with `text_model.` names, as transformers' CLIPTextModel
    has them (old SD1 files without the `text_model.` level get it added, as ComfyUI does);
    OpenCLIP-layout encoders (CLIP-H, CLIP-G) keep OpenCLIP's names (`transformer.resblocks.*`,
    `token_embedding.weight`, `positional_embedding`, `ln_final.*`, `text_projection`).
    """
    out: dict[str, dict[str, Any]] = {}
    for encoder in encoders:
        part = {k[len(encoder.prefix):]: v for k, v in state_dict.items() if k.startswith(encoder.prefix)}
        if encoder.layout == "hf" and not any(k.startswith("text_model.") for k in part):
            part = {(k if k.startswith("text_projection") else f"text_model.{k}"): v for k, v in part.items()}
        out[encoder.name] = part
    return out


# -- the whole checkpoint --------------------------------------------------------------------
def detect_checkpoint(state_dict: Mapping[str, Any]) -> CheckpointInfo:
    """Everything about a single-file checkpoint (or a bare UNet file) that loading needs."""
    prefix = find_unet_prefix(state_dict)
    if prefix is None:
        hint = ""
        if any(k.startswith(("lora_unet_", "lora_te")) or ".lora_down." in k for k in state_dict):
            hint = " (this looks like a LoRA: put it in models/loras and use a LoRA loader)"
        elif find_vae_prefix(state_dict) is not None:
            hint = " (this looks like a VAE: put it in models/vae and use VAELoader)"
        elif any(k.startswith(("down_blocks.", "conv_in.")) for k in state_dict):
            hint = " (diffusers-layout UNet files are not supported; use the single-file LDM layout)"
        raise ModelDetectionError("could not detect the model type: no Stable Diffusion UNet found" + hint)
    unet = detect_unet(state_dict, prefix)
    family = unet_family(unet)
    unet = with_family_settings(unet, family)
    prediction, zsnr = detect_prediction(state_dict, family, unet, prefix)
    vae_prefix = find_vae_prefix(state_dict) if prefix else None
    vae = detect_vae(state_dict, vae_prefix) if vae_prefix is not None else None
    encoders = detect_text_encoders(state_dict, family) if prefix else []
    return CheckpointInfo(
        family=family, prediction=prediction, unet=unet, unet_prefix=prefix, vae=vae,
        vae_prefix=vae_prefix, text_encoders=encoders, zsnr=zsnr,
    )
