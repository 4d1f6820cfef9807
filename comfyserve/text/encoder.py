"""One CLIP text encoder: transformers' CLIPTextModel(WithProjection) as the weight container,
run the way ComfyUI runs its own CLIP (comfy/clip_model.py + sd1_clip.SDClipModel).

Numerics (ComfyUI's, on every device): weights are stored in float16 and every op computes
in float32 — token embeddings are looked up and then upcast, each Linear/LayerNorm weight is
upcast when used. Attention is causal only (no padding mask), 64-wide heads.

Per encoder (`EncoderSpec`): the activation (quick_gelu for CLIP-L, gelu for OpenCLIP), the
padding token, the default output layer (last, or the penultimate "hidden" layer), whether a
hidden layer is passed through the final LayerNorm (`layer_norm_hidden_state`), and whether the
pooled output is projected (`text_projection`) or the raw final-normed end-token state.

Layer selection (`layer_idx`, ComfyUI's set_clip_options "layer"): None → the encoder's
default; n with |n| <= number of layers → the output of layer n (negative counts from the end:
-1 is the last layer, -2 the penultimate); |n| larger → the last (final-normed) output.
The pooled output is always taken from the final-normed last layer, at the position of the first
end token (the number of attended tokens − 1).

Prompt weights (`encode_token_weights`): when any weight differs from 1.0, an "empty" sequence
(start, end, pad…) is encoded in the same batch and every weighted position becomes
`(z - z_empty) * w + z_empty` (positions with weight exactly 1.0 are left untouched). Chunks
are concatenated along the token axis; the pooled output is the first chunk's.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from comfyserve.text.convert import EncoderShape, StateDict, infer_shape

log = logging.getLogger(__name__)

START_TOKEN = 49406
END_TOKEN = 49407
LAYER_NORM_EPS = 1e-5
COMPUTE_DTYPE = torch.float32

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "gelu": F.gelu,
}

# Sentinel: "use the encoder's current options" (ComfyUI's set_clip_options state).
_UNSET: Any = object()


@dataclass(frozen=True)
class EncoderSpec:
    """How one encoder of a family tokenizes and encodes (ComfyUI's per-model constants)."""

    name: str  # clip_l / clip_h / clip_g — also the prefix of its weight keys
    hidden_act: str
    pad_with_end: bool  # pad with the end token (CLIP-L) or with 0 (OpenCLIP)
    default_layer: int | None  # None: last layer; -2: penultimate
    layer_norm_hidden_state: bool
    projected_pooled: bool

    @property
    def token_key(self) -> str:
        """The key of this encoder's batches in the tokens dict (`l`, `h`, `g`)."""
        return self.name.removeprefix("clip_")

    @property
    def pad_token(self) -> int:
        return END_TOKEN if self.pad_with_end else 0


def _our_name(module_key: str) -> str:
    # transformers 4 names everything `text_model.…`; 5 drops that level in CLIPTextModel.
    if module_key.startswith(("text_model.", "text_projection.")):
        return module_key
    return "text_model." + module_key


def named_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters under transformers-4 / ComfyUI names (`text_model.…`)."""
    return {_our_name(k): v for k, v in model.named_parameters()}


def empty_tokens(spec: EncoderSpec, length: int) -> list[int]:
    """[start, end, pad, ...] of `length` — what weights are measured against."""
    out = [START_TOKEN, END_TOKEN]
    return out + [spec.pad_token] * (length - len(out))


class ClipEncoder:
    """A loaded CLIP text encoder; `encode_token_weights` is ComfyUI's SDClipModel method."""

    def __init__(self, spec: EncoderSpec, model: torch.nn.Module, shape: EncoderShape) -> None:
        self.spec = spec
        self.model = model  # transformers CLIPTextModel / CLIPTextModelWithProjection
        self.shape = shape
        self.num_layers = shape.layers
        self._params: dict[str, torch.Tensor] = named_weights(model)
        self.layer_idx: int | None = spec.default_layer
        self.projected_pooled = spec.projected_pooled

    # -- ComfyUI's option state, for callers that drive the encoder the ComfyUI way ------------
    def set_clip_options(self, options: Mapping[str, Any]) -> None:
        if "layer" in options:
            self.layer_idx = options["layer"]
        if "projected_pooled" in options:
            self.projected_pooled = bool(options["projected_pooled"])

    def reset_clip_options(self) -> None:
        self.layer_idx = self.spec.default_layer
        self.projected_pooled = self.spec.projected_pooled

    # -- weights ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._params["text_model.embeddings.token_embedding.weight"].device

    @property
    def dtype(self) -> torch.dtype:
        return self._params["text_model.embeddings.token_embedding.weight"].dtype

    def weight_names(self) -> list[str]:
        """The encoder's weight names in transformers' layout (`text_model.…`)."""
        return list(self._params)

    def parameter(self, name: str) -> torch.Tensor:
        return self._params[name]

    def to(self, device: torch.device | str) -> ClipEncoder:
        self.model.to(device)
        self._params = named_weights(self.model)
        return self

    # -- forward ---------------------------------------------------------------------------------
    def _embed(self, sections: Sequence[Sequence[Any]], raw: Callable[[str], torch.Tensor]
               ) -> tuple[torch.Tensor, list[int]]:
        table = raw("text_model.embeddings.token_embedding.weight")
        device, width = table.device, table.shape[1]
        pad = self.spec.pad_token

        def lookup(ids: list[int]) -> torch.Tensor:
            index = torch.tensor(ids, dtype=torch.long, device=device)
            return F.embedding(index, table).to(COMPUTE_DTYPE)

        rows_out: list[torch.Tensor] = []
        counts: list[int] = []
        for sequence in sections:
            ids = [int(t) for t in sequence if isinstance(t, numbers.Integral)]
            looked_up = lookup(ids) if ids else table.new_zeros((0, width), dtype=COMPUTE_DTYPE)
            pieces: list[torch.Tensor] = []
            attended = 0
            eos = left_pad = False
            next_id = 0
            pad_extra = 0
            for position, token in enumerate(sequence):
                if isinstance(token, numbers.Integral):
                    token = int(token)
                    if position == 0 and token == pad:
                        left_pad = True
                    if not (eos or (left_pad and token == pad)):
                        attended += 1
                        left_pad = False
                    pieces.append(looked_up[next_id: next_id + 1])
                    next_id += 1
                    if not eos and token == END_TOKEN and not left_pad:
                        eos = True
                    continue
                vectors = token.get("data") if isinstance(token, dict) and token.get("type") == "embedding" else token
                if not torch.is_tensor(vectors):
                    continue  # not a text embedding (ComfyUI drops these for CLIP)
                vectors = vectors.reshape(-1, vectors.shape[-1]).to(device=device, dtype=COMPUTE_DTYPE)
                if vectors.shape[-1] == width:
                    pieces.append(vectors)
                    attended += vectors.shape[0]
                else:
                    log.warning("WARNING: shape mismatch when trying to apply embedding, embedding will be "
                                "ignored %d != %d", vectors.shape[-1], width)
                    pad_extra += vectors.shape[0]
            if pad_extra:
                pieces.append(lookup([pad] * pad_extra))
            rows_out.append(torch.cat(pieces, dim=0))
            counts.append(attended)
        return torch.stack(rows_out), counts

    def forward(self, sections: Sequence[Sequence[Any]], layer_idx: int | None,
                overrides: Mapping[str, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(selected hidden states [B,T,D], None if it is the last layer, final-normed last
        layer [B,T,D], pooled [B,D] unprojected) for token sequences `sections`."""
        overrides = overrides or {}
        device = self.device

        def raw(name: str) -> torch.Tensor:
            found = overrides.get(name)
            if found is None:
                return self._params[name]
            return found if found.device == device else found.to(device)

        def w(name: str) -> torch.Tensor:
            return raw(name).to(COMPUTE_DTYPE)

        x, counts = self._embed(sections, raw)
        batch, length, width = x.shape
        x = x + w("text_model.embeddings.position_embedding.weight")[:length]
        heads = self.shape.heads
        head_width = width // heads
        act = ACTIVATIONS[self.spec.hidden_act]

        capture = None
        if layer_idx is not None and abs(layer_idx) <= self.num_layers:
            capture = layer_idx if layer_idx >= 0 else self.num_layers + layer_idx

        def norm(t: torch.Tensor, prefix: str) -> torch.Tensor:
            return F.layer_norm(t, (width,), w(prefix + ".weight"), w(prefix + ".bias"), LAYER_NORM_EPS)

        def linear(t: torch.Tensor, prefix: str) -> torch.Tensor:
            return F.linear(t, w(prefix + ".weight"), w(prefix + ".bias"))

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, heads, head_width).transpose(1, 2)

        intermediate = None
        for i in range(self.num_layers):
            p = f"text_model.encoder.layers.{i}."
            h = norm(x, p + "layer_norm1")
            q = split_heads(linear(h, p + "self_attn.q_proj"))
            k = split_heads(linear(h, p + "self_attn.k_proj"))
            v = split_heads(linear(h, p + "self_attn.v_proj"))
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            attn = attn.transpose(1, 2).reshape(batch, length, width)
            x = x + linear(attn, p + "self_attn.out_proj")
            h = act(linear(norm(x, p + "layer_norm2"), p + "mlp.fc1"))
            x = x + linear(h, p + "mlp.fc2")
            if i == capture:
                intermediate = x
        final = norm(x, "text_model.final_layer_norm")
        if intermediate is not None and self.spec.layer_norm_hidden_state:
            intermediate = norm(intermediate, "text_model.final_layer_norm")
        index = torch.tensor([max(c, 1) - 1 for c in counts], device=final.device)
        pooled = final[torch.arange(batch, device=final.device), index]
        return intermediate, final, pooled

    def project(self, pooled: torch.Tensor, overrides: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The pooled output through `text_projection` (identity when the encoder has none)."""
        name = "text_projection.weight"
        weight = (overrides or {}).get(name)
        if weight is None:
            weight = self._params.get(name)
        if weight is None:
            return pooled
        return F.linear(pooled, weight.to(device=pooled.device, dtype=COMPUTE_DTYPE))

    @torch.no_grad()
    def encode_token_weights(self, token_weight_pairs: Sequence[Sequence[tuple]], layer_idx: Any = _UNSET,
                             projected: bool | None = None,
                             overrides: Mapping[str, torch.Tensor] | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cond [1, 77·chunks, D], pooled [1, D']) for one encoder's token batches."""
        if layer_idx is _UNSET:
            layer_idx = self.layer_idx
        if projected is None:
            projected = self.projected_pooled
        sections = [[pair[0] for pair in chunk] for chunk in token_weight_pairs]
        longest = max((len(s) for s in sections), default=0)
        has_weights = any(pair[1] != 1.0 for chunk in token_weight_pairs for pair in chunk)
        count = len(sections)
        to_encode = list(sections)
        if has_weights or count == 0:
            to_encode.append(empty_tokens(self.spec, longest or 77))

        hidden, final, pooled = self.forward(to_encode, layer_idx, overrides)
        z = (final if hidden is None else hidden).float()
        pooled = self.project(pooled, overrides) if projected else pooled
        first_pooled = pooled[0:1].float().cpu()

        if count == 0:
            return z[-1:].cpu(), first_pooled
        out = z[:count]
        if has_weights:
            weights = torch.tensor([[float(pair[1]) for pair in chunk] for chunk in token_weight_pairs],
                                   dtype=z.dtype, device=z.device)
            z_empty = z[-1]
            weighted = (out - z_empty) * weights.unsqueeze(-1) + z_empty
            out = torch.where((weights == 1.0).unsqueeze(-1), out, weighted)
        return out.reshape(1, -1, out.shape[-1]).cpu(), first_pooled


def build_encoder(spec: EncoderSpec, state_dict: StateDict, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float16, heads: int | None = None) -> ClipEncoder:
    """A ClipEncoder from a transformers-layout state dict (convert.to_transformers_layout),
    its config read off the tensor shapes; weights cast to `dtype` on `device`."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    shape = infer_shape(state_dict, heads)
    special = {"bos_token_id": START_TOKEN, "eos_token_id": END_TOKEN} if shape.vocab > END_TOKEN else {}
    config = CLIPTextConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.width,
        intermediate_size=shape.intermediate,
        projection_dim=shape.projection_dim or shape.width,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        max_position_embeddings=shape.positions,
        hidden_act=spec.hidden_act,
        layer_norm_eps=LAYER_NORM_EPS,
        **special,
    )
    cls = CLIPTextModelWithProjection if shape.projection_dim is not None else CLIPTextModel
    with torch.device("meta"):
        model = cls(config)
    module_keys = {_our_name(k): k for k in model.state_dict() if not k.endswith("position_ids")}
    expected = set(module_keys)
    missing = sorted(k for k in expected if k not in state_dict)
    if missing:
        raise ValueError(f"{spec.name}: the text encoder weights are incomplete; missing {missing[:8]}"
                         + (f" and {len(missing) - 8} more" if len(missing) > 8 else ""))
    unexpected = sorted(k for k in state_dict if k not in expected)
    if unexpected:
        log.debug("%s: unexpected text encoder keys ignored: %s", spec.name, unexpected)
    tensors = {module_keys[k]: state_dict[k].to(device=device, dtype=dtype) for k in expected}
    model.load_state_dict(tensors, strict=False, assign=True)
    text_model = getattr(model, "text_model", model)
    embeddings = text_model.embeddings
    embeddings.register_buffer("position_ids", torch.arange(shape.positions, device=device).unsqueeze(0),
                               persistent=False)
    model.eval().requires_grad_(False)
    return ClipEncoder(spec, model, shape)
