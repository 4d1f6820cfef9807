"""Tiny random CLIP text encoders (real vocabulary, few narrow layers) for encoder tests."""

from __future__ import annotations

import copy

import torch

VOCAB = 49408
PROMPT = "a photograph of an astronaut riding a horse"
L_WIDTH, H_WIDTH, G_WIDTH = 128, 128, 192
H_PROJ, G_PROJ = 96, 160


def hf_state_dict(width: int = 128, layers: int = 3, intermediate: int = 256, positions: int = 77,
                  projection: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """A transformers-layout (`text_model.*`) state dict with float16-representable values."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 1.0, offset: float = 0.0) -> torch.Tensor:
        value = torch.randn(*shape, generator=gen) * scale + offset
        return value.to(torch.float16).to(torch.float32)

    sd = {
        "text_model.embeddings.token_embedding.weight": rand(VOCAB, width),
        "text_model.embeddings.position_embedding.weight": rand(positions, width),
        "text_model.embeddings.position_ids": torch.arange(positions)[None],
        "text_model.final_layer_norm.weight": rand(width, scale=0.1, offset=1.0),
        "text_model.final_layer_norm.bias": rand(width, scale=0.02),
    }
    for i in range(layers):
        p = f"text_model.encoder.layers.{i}."
        for name, (out_f, in_f) in {"self_attn.q_proj": (width, width), "self_attn.k_proj": (width, width),
                                    "self_attn.v_proj": (width, width), "self_attn.out_proj": (width, width),
                                    "mlp.fc1": (intermediate, width), "mlp.fc2": (width, intermediate)}.items():
            sd[p + name + ".weight"] = rand(out_f, in_f, scale=in_f ** -0.5)
            sd[p + name + ".bias"] = rand(out_f, scale=0.02)
        for norm in ("layer_norm1", "layer_norm2"):
            sd[p + norm + ".weight"] = rand(width, scale=0.1, offset=1.0)
            sd[p + norm + ".bias"] = rand(width, scale=0.02)
    if projection is not None:
        sd["text_projection.weight"] = rand(projection, width, scale=width ** -0.5)
    return sd


def to_openclip(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights in OpenCLIP's layout (fused in_proj, [width, proj] text_projection)."""
    out = {
        "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        "ln_final.bias": sd["text_model.final_layer_norm.bias"],
        "logit_scale": torch.tensor(4.6052),
    }
    if "text_projection.weight" in sd:
        out["text_projection"] = sd["text_projection.weight"].t().contiguous()
    layers = {int(k.split(".")[3]) for k in sd if k.startswith("text_model.encoder.layers.")}
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    for i in sorted(layers):
        src, dst = f"text_model.encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for ours, theirs in names.items():
            for kind in ("weight", "bias"):
                out[f"{dst}{theirs}.{kind}"] = sd[f"{src}{ours}.{kind}"]
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(
                [sd[f"{src}self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")], dim=0)
    return out


def reference(clip, name, batch):
    """transformers' own forward over the same (float16-stored) weights, in float32."""
    model = copy.deepcopy(clip.cond_stage_model.encoders[name].model).float()
    ids = torch.tensor([[t for t, _ in batch]])
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    inner = getattr(model, "text_model", model)
    pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
    return out, inner.final_layer_norm, pooled


def close(a, b, atol=1e-5):
    return torch.allclose(a, b, atol=atol, rtol=1e-5)
