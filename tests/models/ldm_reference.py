"""An independent, plain-torch LDM UNet forward pass over LDM-named weights, for checking the
diffusers model numerically.

It follows the structure of the original `openaimodel.UNetModel` (and so ComfyUI's): a cos-first
sinusoidal timestep embedding, ResBlocks (GroupNorm 32 / SiLU / conv, time embedding added
after the first conv), SpatialTransformers (GroupNorm eps 1e-6, conv or linear projections,
self attention, cross attention, GEGLU feed-forward, LayerNorms eps 1e-5), stride-2 conv
downsampling, nearest upsampling to the skip's size, skip concatenation on the way up.
The block structure is read from the weights' names, like the real model's module tree.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Reference:
    def __init__(self, state_dict: dict[str, torch.Tensor], prefix: str = "model.diffusion_model.",
                 heads: int | None = 8) -> None:
        self.w = {k[len(prefix):]: v.float() for k, v in state_dict.items() if k.startswith(prefix)}
        self.heads = heads  # fixed count (SD1) or None: channels / 64

    def has(self, key: str) -> bool:
        return key in self.w

    def linear(self, x: torch.Tensor, p: str, bias: bool = True) -> torch.Tensor:
        return F.linear(x, self.w[p + ".weight"], self.w.get(p + ".bias") if bias else None)

    def conv(self, x: torch.Tensor, p: str, stride: int = 1) -> torch.Tensor:
        weight = self.w[p + ".weight"]
        return F.conv2d(x, weight, self.w.get(p + ".bias"), stride=stride, padding=weight.shape[-1] // 2)

    def group_norm(self, x: torch.Tensor, p: str, eps: float) -> torch.Tensor:
        return F.group_norm(x, 32, self.w[p + ".weight"], self.w[p + ".bias"], eps)

    def resblock(self, x: torch.Tensor, p: str, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv(F.silu(self.group_norm(x, p + "in_layers.0", 1e-5)), p + "in_layers.2")
        h = h + self.linear(F.silu(emb), p + "emb_layers.1")[:, :, None, None]
        h = self.conv(F.silu(self.group_norm(h, p + "out_layers.0", 1e-5)), p + "out_layers.3")
        skip = self.conv(x, p + "skip_connection") if self.has(p + "skip_connection.weight") else x
        return skip + h

    def attention(self, x: torch.Tensor, context: torch.Tensor, p: str, heads: int) -> torch.Tensor:
        q = self.linear(x, p + ".to_q", bias=False)
        k = self.linear(context, p + ".to_k", bias=False)
        v = self.linear(context, p + ".to_v", bias=False)
        b, n, inner = q.shape
        d = inner // heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, -1, heads, d).transpose(1, 2)

        weights = torch.softmax(split(q) @ split(k).transpose(-1, -2) * d ** -0.5, dim=-1)
        out = (weights @ split(v)).transpose(1, 2).reshape(b, n, inner)
        return self.linear(out, p + ".to_out.0")

    def transformer(self, x: torch.Tensor, p: str, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        heads = self.heads if self.heads is not None else max(1, c // 64)
        x_in = x
        x = self.group_norm(x, p + "norm", 1e-6)
        linear = self.w[p + "proj_in.weight"].ndim == 2
        if linear:
            x = self.linear(x.flatten(2).transpose(1, 2), p + "proj_in")
        else:
            x = self.conv(x, p + "proj_in").flatten(2).transpose(1, 2)
        k = 0
        while self.has(f"{p}transformer_blocks.{k}.norm1.weight"):
            bp = f"{p}transformer_blocks.{k}."
            ln = lambda t, name, bp=bp: F.layer_norm(t, t.shape[-1:], self.w[bp + name + ".weight"],  # noqa: E731
                                                     self.w[bp + name + ".bias"], 1e-5)
            n = ln(x, "norm1")
            x = self.attention(n, n, bp + "attn1", heads) + x
            x = self.attention(ln(x, "norm2"), context, bp + "attn2", heads) + x
            a, gate = self.linear(ln(x, "norm3"), bp + "ff.net.0.proj").chunk(2, dim=-1)
            x = self.linear(a * F.gelu(gate), bp + "ff.net.2") + x
            k += 1
        inner = x.shape[-1]
        if linear:
            x = self.linear(x, p + "proj_out").transpose(1, 2).reshape(b, c, h, w)
        else:
            x = self.conv(x.transpose(1, 2).reshape(b, inner, h, w), p + "proj_out")
        return x + x_in

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        mc = self.w["input_blocks.0.0.weight"].shape[0]
        emb = self.linear(F.silu(self.linear(timestep_embedding(t, mc), "time_embed.0")), "time_embed.2")
        if y is not None:
            emb = emb + self.linear(F.silu(self.linear(y, "label_emb.0.0")), "label_emb.0.2")
        hs = []
        h = x.float()
        i = 0
        while self.has(f"input_blocks.{i}.0.weight") or self.has(f"input_blocks.{i}.0.op.weight") or \
                self.has(f"input_blocks.{i}.0.in_layers.0.weight"):
            p = f"input_blocks.{i}."
            if i == 0:
                h = self.conv(h, p + "0")
            elif self.has(p + "0.op.weight"):
                h = self.conv(h, p + "0.op", stride=2)
            else:
                h = self.resblock(h, p + "0.", emb)
                if self.has(p + "1.proj_in.weight"):
                    h = self.transformer(h, p + "1.", context)
            hs.append(h)
            i += 1
        h = self.resblock(h, "middle_block.0.", emb)
        h = self.transformer(h, "middle_block.1.", context)
        h = self.resblock(h, "middle_block.2.", emb)
        i = 0
        while self.has(f"output_blocks.{i}.0.in_layers.0.weight"):
            p = f"output_blocks.{i}."
            h = self.resblock(torch.cat([h, hs.pop()], dim=1), p + "0.", emb)
            sub = 1
            if self.has(p + "1.proj_in.weight"):
                h = self.transformer(h, p + "1.", context)
                sub = 2
            if self.has(f"{p}{sub}.conv.weight"):
                size = hs[-1].shape[-2:] if hs else (h.shape[-2] * 2, h.shape[-1] * 2)
                h = self.conv(F.interpolate(h, size=size, mode="nearest"), f"{p}{sub}.conv")
            i += 1
        return self.conv(F.silu(self.group_norm(h, "out.0", 1e-5)), "out.2")
