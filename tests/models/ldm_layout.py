"""Tiny checkpoints in the original single-file LDM/SGM layout, written from scratch for tests.

`unet_shapes(...)` lists every key and shape of an LDM `UNetModel` (openaimodel.py's module
tree: ResBlocks, SpatialTransformers, down/up samplers), `vae_shapes(...)` of the first-stage
autoencoder, `clip_hf_shapes` / `open_clip_shapes` of the text encoders. `checkpoint(...)`
fills them with small seeded random values (norm weights near 1) so forward passes are sane.
Nothing here comes from diffusers, so the conversion under test is checked against an
independent description of the layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

Shapes = dict[str, tuple[int, ...]]


@dataclass
class TinyUNet:
    model_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 1
    depth: tuple[int, ...] = (1, 1)  # transformer depth per level (0: no attention)
    depth_middle: int = 1
    context_dim: int = 768
    linear: bool = False
    heads: int | None = 8  # fixed head count (SD1); None: channels / 64
    adm: int | None = None
    in_channels: int = 4
    out_channels: int = 4
    extra: dict = field(default_factory=dict)

    def level_heads(self, channels: int) -> int:
        return self.heads if self.heads is not None else max(1, channels // 64)


def _resblock(p: str, cin: int, cout: int, emb: int) -> Shapes:
    out = {
        f"{p}in_layers.0.weight": (cin,), f"{p}in_layers.0.bias": (cin,),
        f"{p}in_layers.2.weight": (cout, cin, 3, 3), f"{p}in_layers.2.bias": (cout,),
        f"{p}emb_layers.1.weight": (cout, emb), f"{p}emb_layers.1.bias": (cout,),
        f"{p}out_layers.0.weight": (cout,), f"{p}out_layers.0.bias": (cout,),
        f"{p}out_layers.3.weight": (cout, cout, 3, 3), f"{p}out_layers.3.bias": (cout,),
    }
    if cin != cout:
        out[f"{p}skip_connection.weight"] = (cout, cin, 1, 1)
        out[f"{p}skip_connection.bias"] = (cout,)
    return out


def _transformer(p: str, ch: int, depth: int, context: int, linear: bool) -> Shapes:
    inner = ch
    out: Shapes = {f"{p}norm.weight": (ch,), f"{p}norm.bias": (ch,)}
    proj_in = (inner, ch) if linear else (inner, ch, 1, 1)
    proj_out = (ch, inner) if linear else (ch, inner, 1, 1)
    out.update({f"{p}proj_in.weight": proj_in, f"{p}proj_in.bias": (inner,),
                f"{p}proj_out.weight": proj_out, f"{p}proj_out.bias": (ch,)})
    for k in range(depth):
        b = f"{p}transformer_blocks.{k}."
        for attn, kv in (("attn1", inner), ("attn2", context)):
            out[f"{b}{attn}.to_q.weight"] = (inner, inner)
            out[f"{b}{attn}.to_k.weight"] = (inner, kv)
            out[f"{b}{attn}.to_v.weight"] = (inner, kv)
            out[f"{b}{attn}.to_out.0.weight"] = (inner, inner)
            out[f"{b}{attn}.to_out.0.bias"] = (inner,)
        out[f"{b}ff.net.0.proj.weight"] = (inner * 8, inner)
        out[f"{b}ff.net.0.proj.bias"] = (inner * 8,)
        out[f"{b}ff.net.2.weight"] = (inner, inner * 4)
        out[f"{b}ff.net.2.bias"] = (inner,)
        for n in (1, 2, 3):
            out[f"{b}norm{n}.weight"] = (inner,)
            out[f"{b}norm{n}.bias"] = (inner,)
    return out


def unet_shapes(cfg: TinyUNet, prefix: str = "model.diffusion_model.") -> Shapes:
    mc = cfg.model_channels
    emb = mc * 4
    s: Shapes = {"time_embed.0.weight": (emb, mc), "time_embed.0.bias": (emb,),
                 "time_embed.2.weight": (emb, emb), "time_embed.2.bias": (emb,)}
    if cfg.adm is not None:
        s.update({"label_emb.0.0.weight": (emb, cfg.adm), "label_emb.0.0.bias": (emb,),
                  "label_emb.0.2.weight": (emb, emb), "label_emb.0.2.bias": (emb,)})
    s["input_blocks.0.0.weight"] = (mc, cfg.in_channels, 3, 3)
    s["input_blocks.0.0.bias"] = (mc,)
    skips = [mc]
    ch = mc
    index = 1
    levels = len(cfg.channel_mult)
    for level, mult in enumerate(cfg.channel_mult):
        for _ in range(cfg.num_res_blocks):
            s.update(_resblock(f"input_blocks.{index}.0.", ch, mult * mc, emb))
            ch = mult * mc
            if cfg.depth[level]:
                s.update(_transformer(f"input_blocks.{index}.1.", ch, cfg.depth[level], cfg.context_dim, cfg.linear))
            skips.append(ch)
            index += 1
        if level != levels - 1:
            s[f"input_blocks.{index}.0.op.weight"] = (ch, ch, 3, 3)
            s[f"input_blocks.{index}.0.op.bias"] = (ch,)
            skips.append(ch)
            index += 1
    s.update(_resblock("middle_block.0.", ch, ch, emb))
    s.update(_transformer("middle_block.1.", ch, cfg.depth_middle, cfg.context_dim, cfg.linear))
    s.update(_resblock("middle_block.2.", ch, ch, emb))
    index = 0
    for level in reversed(range(levels)):
        mult = cfg.channel_mult[level]
        for j in range(cfg.num_res_blocks + 1):
            skip = skips.pop()
            s.update(_resblock(f"output_blocks.{index}.0.", ch + skip, mult * mc, emb))
            ch = mult * mc
            sub = 1
            if cfg.depth[level]:
                s.update(_transformer(f"output_blocks.{index}.1.", ch, cfg.depth[level], cfg.context_dim, cfg.linear))
                sub = 2
            if level and j == cfg.num_res_blocks:
                s[f"output_blocks.{index}.{sub}.conv.weight"] = (ch, ch, 3, 3)
                s[f"output_blocks.{index}.{sub}.conv.bias"] = (ch,)
            index += 1
    s.update({"out.0.weight": (mc,), "out.0.bias": (mc,), "out.2.weight": (cfg.out_channels, mc, 3, 3),
              "out.2.bias": (cfg.out_channels,)})
    return {prefix + k: v for k, v in s.items()}


def _vae_resnet(p: str, cin: int, cout: int) -> Shapes:
    out = {f"{p}norm1.weight": (cin,), f"{p}norm1.bias": (cin,), f"{p}conv1.weight": (cout, cin, 3, 3),
           f"{p}conv1.bias": (cout,), f"{p}norm2.weight": (cout,), f"{p}norm2.bias": (cout,),
           f"{p}conv2.weight": (cout, cout, 3, 3), f"{p}conv2.bias": (cout,)}
    if cin != cout:
        out[f"{p}nin_shortcut.weight"] = (cout, cin, 1, 1)
        out[f"{p}nin_shortcut.bias"] = (cout,)
    return out


def _vae_attn(p: str, c: int) -> Shapes:
    out = {f"{p}norm.weight": (c,), f"{p}norm.bias": (c,)}
    for name in ("q", "k", "v", "proj_out"):
        out[f"{p}{name}.weight"] = (c, c, 1, 1)
        out[f"{p}{name}.bias"] = (c,)
    return out


def vae_shapes(ch: int = 32, ch_mult: tuple[int, ...] = (1, 2), num_res_blocks: int = 1, z: int = 4,
               prefix: str = "first_stage_model.") -> Shapes:
    s: Shapes = {"encoder.conv_in.weight": (ch, 3, 3, 3), "encoder.conv_in.bias": (ch,)}
    in_mult = (1, *ch_mult)
    block_in = ch
    for i, mult in enumerate(ch_mult):
        block_in, block_out = ch * in_mult[i], ch * mult
        for j in range(num_res_blocks):
            s.update(_vae_resnet(f"encoder.down.{i}.block.{j}.", block_in, block_out))
            block_in = block_out
        if i != len(ch_mult) - 1:
            s[f"encoder.down.{i}.downsample.conv.weight"] = (block_in, block_in, 3, 3)
            s[f"encoder.down.{i}.downsample.conv.bias"] = (block_in,)
    s.update(_vae_resnet("encoder.mid.block_1.", block_in, block_in))
    s.update(_vae_attn("encoder.mid.attn_1.", block_in))
    s.update(_vae_resnet("encoder.mid.block_2.", block_in, block_in))
    s.update({"encoder.norm_out.weight": (block_in,), "encoder.norm_out.bias": (block_in,),
              "encoder.conv_out.weight": (2 * z, block_in, 3, 3), "encoder.conv_out.bias": (2 * z,)})
    block_in = ch * ch_mult[-1]
    s.update({"decoder.conv_in.weight": (block_in, z, 3, 3), "decoder.conv_in.bias": (block_in,)})
    s.update(_vae_resnet("decoder.mid.block_1.", block_in, block_in))
    s.update(_vae_attn("decoder.mid.attn_1.", block_in))
    s.update(_vae_resnet("decoder.mid.block_2.", block_in, block_in))
    for i in reversed(range(len(ch_mult))):
        block_out = ch * ch_mult[i]
        for j in range(num_res_blocks + 1):
            s.update(_vae_resnet(f"decoder.up.{i}.block.{j}.", block_in, block_out))
            block_in = block_out
        if i != 0:
            s[f"decoder.up.{i}.upsample.conv.weight"] = (block_in, block_in, 3, 3)
            s[f"decoder.up.{i}.upsample.conv.bias"] = (block_in,)
    s.update({"decoder.norm_out.weight": (block_in,), "decoder.norm_out.bias": (block_in,),
              "decoder.conv_out.weight": (3, block_in, 3, 3), "decoder.conv_out.bias": (3,),
              "quant_conv.weight": (2 * z, 2 * z, 1, 1), "quant_conv.bias": (2 * z,),
              "post_quant_conv.weight": (z, z, 1, 1), "post_quant_conv.bias": (z,)})
    return {prefix + k: v for k, v in s.items()}


def clip_hf_shapes(prefix: str, hidden: int = 64, layers: int = 2, vocab: int = 1000, projection: int | None = None) -> Shapes:
    p = prefix + "text_model."
    s: Shapes = {f"{p}embeddings.token_embedding.weight": (vocab, hidden),
                 f"{p}embeddings.position_embedding.weight": (77, hidden),
                 f"{p}final_layer_norm.weight": (hidden,), f"{p}final_layer_norm.bias": (hidden,)}
    for i in range(layers):
        b = f"{p}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s[f"{b}self_attn.{proj}.weight"] = (hidden, hidden)
            s[f"{b}self_attn.{proj}.bias"] = (hidden,)
        for n in ("layer_norm1", "layer_norm2"):
            s[f"{b}{n}.weight"] = (hidden,)
            s[f"{b}{n}.bias"] = (hidden,)
        s.update({f"{b}mlp.fc1.weight": (hidden * 4, hidden), f"{b}mlp.fc1.bias": (hidden * 4,),
                  f"{b}mlp.fc2.weight": (hidden, hidden * 4), f"{b}mlp.fc2.bias": (hidden,)})
    if projection:
        s[prefix + "text_projection.weight"] = (projection, hidden)
    return s


def open_clip_shapes(prefix: str, hidden: int = 64, layers: int = 2, vocab: int = 1000, projection: int = 64) -> Shapes:
    s: Shapes = {f"{prefix}token_embedding.weight": (vocab, hidden), f"{prefix}positional_embedding": (77, hidden),
                 f"{prefix}ln_final.weight": (hidden,), f"{prefix}ln_final.bias": (hidden,),
                 f"{prefix}text_projection": (hidden, projection), f"{prefix}logit_scale": ()}
    for i in range(layers):
        b = f"{prefix}transformer.resblocks.{i}."
        s.update({f"{b}ln_1.weight": (hidden,), f"{b}ln_1.bias": (hidden,), f"{b}ln_2.weight": (hidden,),
                  f"{b}ln_2.bias": (hidden,), f"{b}attn.in_proj_weight": (3 * hidden, hidden),
                  f"{b}attn.in_proj_bias": (3 * hidden,), f"{b}attn.out_proj.weight": (hidden, hidden),
                  f"{b}attn.out_proj.bias": (hidden,), f"{b}mlp.c_fc.weight": (4 * hidden, hidden),
                  f"{b}mlp.c_fc.bias": (4 * hidden,), f"{b}mlp.c_proj.weight": (hidden, 4 * hidden),
                  f"{b}mlp.c_proj.bias": (hidden,)})
    return s


def fill(shapes: Shapes, seed: int = 0, meta: bool = False) -> dict[str, torch.Tensor]:
    """Seeded values: biases small, 1-D weights near 1 (norms), others fan-in scaled."""
    if meta:
        return {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=generator)
        if key.endswith(".bias") or key.endswith("_bias"):
            out[key] = 0.02 * noise
        elif len(shape) <= 1:
            out[key] = 1.0 + 0.1 * noise if shape else torch.tensor(4.6)
        else:
            out[key] = noise / math.sqrt(math.prod(shape[1:]))
    return out


# The families' tiny shapes: real widths where detection reads them, tiny everything else.
def sd1(**kw) -> TinyUNet:
    return TinyUNet(**{"context_dim": 768, "heads": 8, **kw})


def sd2(**kw) -> TinyUNet:
    # Four levels with two residual blocks, so output block 11 (the v-prediction probe) exists.
    base = dict(model_channels=64, channel_mult=(1, 1, 2, 2), num_res_blocks=2, depth=(1, 1, 1, 0),
                depth_middle=1, context_dim=1024, linear=True, heads=None)
    return TinyUNet(**{**base, **kw})


def sdxl(**kw) -> TinyUNet:
    base = dict(model_channels=64, channel_mult=(1, 2, 2), num_res_blocks=2, depth=(0, 2, 3), depth_middle=3,
                context_dim=2048, linear=True, heads=None, adm=2816)
    return TinyUNet(**{**base, **kw})


def sdxl_refiner(**kw) -> TinyUNet:
    base = dict(model_channels=64, channel_mult=(1, 2, 2, 1), num_res_blocks=2, depth=(0, 2, 2, 0),
                depth_middle=2, context_dim=1280, linear=True, heads=None, adm=2560)
    return TinyUNet(**{**base, **kw})


def text_encoder_shapes(family: str) -> Shapes:
    if family == "sd1":
        return clip_hf_shapes("cond_stage_model.transformer.", hidden=64)
    if family == "sd2":
        return open_clip_shapes("cond_stage_model.model.", hidden=64)
    if family == "sdxl":
        return {**clip_hf_shapes("conditioner.embedders.0.transformer.", hidden=64),
                **open_clip_shapes("conditioner.embedders.1.model.", hidden=80, projection=48)}
    return open_clip_shapes("conditioner.embedders.0.model.", hidden=80, projection=48)


def checkpoint(cfg: TinyUNet, family: str, seed: int = 0, meta: bool = False, with_vae: bool = True,
               with_text: bool = True) -> dict[str, torch.Tensor]:
    shapes = unet_shapes(cfg)
    if with_vae:
        shapes.update(vae_shapes())
    if with_text:
        shapes.update(text_encoder_shapes(family))
    return fill(shapes, seed, meta)
