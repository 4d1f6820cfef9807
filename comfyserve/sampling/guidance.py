"""From CONDITIONING lists to one denoised prediction per step: ComfyUI's guidance.

Before sampling, each `[tensor, options]` pair becomes a cond dict: percentage areas turn into
latent units, masks are resized to the latent, `start/end_percent` become sigmas, and the
model's inputs (`c_crossattn`, SDXL's `y`) are built. A positive cond with an area gets a
negative twin with the same area (and vice versa), as ComfyUI does.

Each step, every cond that applies at this sigma is cut to its area, run through the model
(cond and uncond batched together when their shapes allow), weighted by its strength/mask with
ComfyUI's 8-step fuzzy area edges, and averaged where areas overlap; then CFG mixes the two.
The inpainting wrapper keeps the unmasked latent on the noised original at every step.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

Cond = dict[str, Any]
AREA_FUZZ_STEPS = 8


# -- model inputs ------------------------------------------------------------------------------
def repeat_to_batch_size(tensor: torch.Tensor, batch_size: int) -> torch.Tensor:
    if tensor.shape[0] > batch_size:
        return tensor[:batch_size]
    if tensor.shape[0] < batch_size:
        repeats = [math.ceil(batch_size / tensor.shape[0])] + [1] * (tensor.ndim - 1)
        return tensor.repeat(repeats)[:batch_size]
    return tensor


@dataclass
class ModelInput:
    """One named model input of a cond (`c_crossattn`, `y`): batched, and concatenated with
    other conds' inputs when a step runs several conds at once."""

    cond: torch.Tensor
    cross_attention: bool = False

    def for_batch(self, batch_size: int, device: torch.device) -> ModelInput:
        return ModelInput(repeat_to_batch_size(self.cond, batch_size).to(device), self.cross_attention)

    def can_concat(self, other: ModelInput) -> bool:
        a, b = self.cond.shape, other.cond.shape
        if a == b:
            return True
        if not self.cross_attention or a[0] != b[0] or a[2] != b[2]:
            return False
        # Token lengths are repeated up to their least common multiple; not beyond 4 times.
        return math.lcm(a[1], b[1]) // min(a[1], b[1]) <= 4

    @staticmethod
    def concat(inputs: list[ModelInput]) -> torch.Tensor:
        if not inputs[0].cross_attention:
            return torch.cat([i.cond for i in inputs])
        length = math.lcm(*(i.cond.shape[1] for i in inputs))
        parts = [i.cond if i.cond.shape[1] == length else i.cond.repeat(1, length // i.cond.shape[1], 1)
                 for i in inputs]
        return torch.cat(parts)


def timestep_embedding(values: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding, cosines first (the LDM UNet's and SDXL's size embedder's)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = values[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sdxl_adm(options: Cond, refiner: bool) -> torch.Tensor:
    """SDXL's ADM vector `y`: pooled text output, then 256-wide embeddings of the sizes (base:
    height, width, crop_h, crop_w, target_height, target_width; refiner: height, width, crop_h,
    crop_w, aesthetic score — 6 for positive prompts, 2.5 for negative ones by default)."""
    pooled = options["pooled_output"]
    width, height = options.get("width", 768), options.get("height", 768)
    values = [height, width, options.get("crop_h", 0), options.get("crop_w", 0)]
    if refiner:
        default_score = 2.5 if options.get("prompt_type", "") == "negative" else 6
        values.append(options.get("aesthetic_score", default_score))
    else:
        values += [options.get("target_height", height), options.get("target_width", width)]
    embedded = torch.cat([timestep_embedding(torch.tensor([float(v)]), 256) for v in values])
    flat = torch.flatten(embedded).unsqueeze(0).repeat(pooled.shape[0], 1)
    return torch.cat((pooled.to(flat.device), flat), dim=1)


def model_inputs(model: Any, options: Cond) -> dict[str, ModelInput]:
    """The model's inputs for one cond (ComfyUI's `extra_conds`)."""
    out: dict[str, ModelInput] = {}
    if options.get("cross_attn") is not None:
        out["c_crossattn"] = ModelInput(options["cross_attn"], cross_attention=True)
    family = getattr(model, "family", "sd1")
    if family in ("sdxl", "sdxl_refiner") and options.get("pooled_output") is not None:
        out["y"] = ModelInput(sdxl_adm(options, refiner=family == "sdxl_refiner"))
    return out


# -- preparing conds ---------------------------------------------------------------------------
def convert_cond(conditioning: list[list[Any]]) -> list[Cond]:
    out = []
    for tensor, options in conditioning:
        cond = dict(options)
        if tensor is not None:
            cond["cross_attn"] = tensor
        cond.setdefault("model_conds", {})
        cond["uuid"] = uuid.uuid4()
        out.append(cond)
    return out


def _resize_mask(mask: torch.Tensor, dims: tuple[int, int]) -> torch.Tensor:
    if mask.ndim == len(dims):
        mask = mask.unsqueeze(0)
    if tuple(mask.shape[1:]) != tuple(dims):
        mask = torch.nn.functional.interpolate(mask.unsqueeze(1), size=dims, mode="bilinear").squeeze(1)
    return mask


def _mask_bounds(mask: torch.Tensor, dims: tuple[int, int]) -> tuple[int, int, int, int]:
    bounds = torch.max(torch.abs(mask), dim=0).values
    coords = torch.nonzero(bounds > 0)
    if coords.numel() == 0:
        return (dims[0], dims[1], 0, 0)
    min_y, max_y = int(coords[:, 0].min()), int(coords[:, 0].max())
    min_x, max_x = int(coords[:, 1].min()), int(coords[:, 1].max())
    return (max(1, max_y - min_y + 1), max(1, max_x - min_x + 1), min_y, min_x)


def resolve_areas_and_masks(conds: list[Cond], dims: tuple[int, int], device: torch.device) -> list[Cond]:
    """Percentage areas → latent units; masks → the latent's size (and their bounds as area)."""
    out = []
    for cond in conds:
        cond = dict(cond)
        area = cond.get("area")
        if area is not None and area[0] == "percentage":
            fractions = area[1:]
            half = len(fractions) // 2
            size = tuple(max(1, round(fractions[d] * dims[d])) for d in range(len(dims)))
            offset = tuple(round(fractions[d + half] * dims[d]) for d in range(len(dims)))
            cond["area"] = size + offset
        if cond.get("mask") is not None:
            mask = _resize_mask(cond["mask"].to(device), dims)
            if cond.get("set_area_to_bounds", False):
                cond["area"] = _mask_bounds(mask, dims)
            cond["mask"] = mask
        out.append(cond)
    return out


def set_timestep_range(model_sampling: Any, conds: list[Cond]) -> list[Cond]:
    out = []
    for cond in conds:
        cond = dict(cond)
        if "start_percent" in cond:
            cond["timestep_start"] = float(model_sampling.percent_to_sigma(cond["start_percent"]))
        if "end_percent" in cond:
            cond["timestep_end"] = float(model_sampling.percent_to_sigma(cond["end_percent"]))
        out.append(cond)
    return out


def _area_inside(inner: tuple, outer: tuple) -> bool:
    half = len(inner) // 2
    for i in range(half):
        if inner[half + i] < outer[half + i]:
            return False
        if inner[i] + inner[half + i] > outer[i] + outer[half + i]:
            return False
    return True


def add_same_area_twin(conds: list[Cond], cond: Cond) -> None:
    """If `cond` has an area that no cond of `conds` covers exactly, add a copy of it carrying
    the model inputs of the smallest cond of `conds` that contains the area."""
    area = cond.get("area")
    if area is None:
        return
    smallest = None
    for other in conds:
        other_area = other.get("area")
        if other_area is None:
            smallest = smallest or other
        elif _area_inside(area, other_area):
            if smallest is None or "area" not in smallest:
                smallest = other
            elif math.prod(smallest["area"][: len(smallest["area"]) // 2]) > math.prod(other_area[: len(other_area) // 2]):
                smallest = other
    if smallest is None or smallest.get("area") == area:
        return
    twin = dict(cond)
    twin["model_conds"] = dict(smallest["model_conds"])
    conds.append(twin)


def process_conds(model: Any, noise: torch.Tensor, conds: dict[str, list[Cond]], device: torch.device) -> dict[str, list[Cond]]:
    dims = tuple(noise.shape[2:])
    conds = {k: resolve_areas_and_masks(v, dims, device) for k, v in conds.items()}
    conds = {k: set_timestep_range(model.model_sampling, v) for k, v in conds.items()}
    for kind, items in conds.items():
        encoded = []
        for cond in items:
            options = dict(cond)
            options.setdefault("width", noise.shape[3] * 8)
            options.setdefault("height", noise.shape[2] * 8)
            options.setdefault("prompt_type", kind)
            cond = dict(cond)
            cond["model_conds"] = {**cond["model_conds"], **model_inputs(model, options)}
            encoded.append(cond)
        conds[kind] = encoded
    for kind, items in conds.items():
        for cond in items:
            for other_kind, others in conds.items():
                if other_kind != kind:
                    add_same_area_twin(others, cond)
    return conds


# -- one step ----------------------------------------------------------------------------------
@dataclass
class _Piece:
    input_x: torch.Tensor
    mult: torch.Tensor
    inputs: dict[str, ModelInput]
    area: tuple | None


def _area_and_mult(cond: Cond, x: torch.Tensor, sigma: torch.Tensor) -> _Piece | None:
    """The part of x a cond applies to and its weight there, or None when the sigma is outside
    the cond's timestep range."""
    if "timestep_start" in cond and float(sigma[0]) > cond["timestep_start"]:
        return None
    if "timestep_end" in cond and float(sigma[0]) < cond["timestep_end"]:
        return None
    dims = tuple(x.shape[2:])
    n = len(dims)
    area = None
    input_x = x
    if cond.get("area") is not None:
        area = list(cond["area"])
        for i in range(n):
            area[i] = min(x.shape[i + 2] - area[n + i], area[i])
            input_x = input_x.narrow(i + 2, area[n + i], area[i])
        area = tuple(area)
    strength = cond.get("strength", 1.0)
    if cond.get("mask") is not None:
        mask = cond["mask"][: input_x.shape[0]]
        if area is not None:
            for i in range(n):
                mask = mask.narrow(i + 1, area[n + i], area[i])
        mask = mask * cond.get("mask_strength", 1.0)
        mask = mask.unsqueeze(1).repeat(input_x.shape[0] // mask.shape[0], input_x.shape[1], 1, 1)
    else:
        mask = torch.ones_like(input_x)
    mult = mask * strength
    if cond.get("mask") is None and area is not None:
        # Soft edges: the outer rows/columns of an area fade in (8 of them, or a quarter of the
        # area's size when smaller), except along the image border.
        for i in range(n):
            steps = min(AREA_FUZZ_STEPS, mult.shape[2 + i] // 4)
            if area[n + i] != 0:
                for t in range(steps):
                    mult.narrow(i + 2, t, 1).mul_((t + 1) / steps)
            if area[i] + area[n + i] < x.shape[i + 2]:
                for t in range(steps):
                    mult.narrow(i + 2, area[i] - 1 - t, 1).mul_((t + 1) / steps)
    inputs = {name: value.for_batch(x.shape[0], x.device) for name, value in cond["model_conds"].items()}
    return _Piece(input_x, mult, inputs, area)


def _can_batch(a: _Piece, b: _Piece) -> bool:
    if a.input_x.shape != b.input_x.shape or a.inputs.keys() != b.inputs.keys():
        return False
    return all(a.inputs[k].can_concat(b.inputs[k]) for k in a.inputs)


def calc_cond_batch(model: Any, conds: list[list[Cond] | None], x: torch.Tensor, sigma: torch.Tensor) -> list[torch.Tensor]:
    """One prediction per cond list (positive, negative, …), each the strength-weighted average
    of its conds over the areas they cover."""
    outs = [torch.zeros_like(x) for _ in conds]
    counts = [torch.ones_like(x) * 1e-37 for _ in conds]
    to_run: list[tuple[_Piece, int]] = []
    for index, cond_list in enumerate(conds):
        for cond in cond_list or ():
            piece = _area_and_mult(cond, x, sigma)
            if piece is not None:
                to_run.append((piece, index))
    while to_run:
        first = to_run[0][0]
        batchable = [i for i, (piece, _) in enumerate(to_run) if _can_batch(piece, first)]
        batchable.reverse()  # ComfyUI pops from the end: the uncond comes first in the batch
        batch = [to_run.pop(i) for i in batchable]
        pieces = [p for p, _ in batch]
        inputs = {name: ModelInput.concat([p.inputs[name] for p in pieces]) for name in pieces[0].inputs}
        x_in = torch.cat([p.input_x for p in pieces])
        sigma_in = torch.cat([sigma] * len(pieces))
        output = model.apply_model(x_in, sigma_in, **inputs).chunk(len(pieces))
        for (piece, index), out in zip(batch, output, strict=True):
            target, count = outs[index], counts[index]
            if piece.area is not None:
                n = len(piece.area) // 2
                for i in range(n):
                    target = target.narrow(i + 2, piece.area[n + i], piece.area[i])
                    count = count.narrow(i + 2, piece.area[n + i], piece.area[i])
            target += out * piece.mult
            count += piece.mult
    return [out / count for out, count in zip(outs, counts, strict=True)]


class CfgDenoiser:
    """`denoiser(x, sigma, model_options=…) -> denoised` with CFG over positive and negative conds.

    `model_options` (ComfyUI's, passed by samplers through extra_args) may carry
    `sampler_post_cfg_function` hooks (CFG++ samplers read the unconditional prediction there)
    and `disable_cfg1_optimization`.
    """

    def __init__(self, model: Any, positive: list[Cond], negative: list[Cond], cfg: float) -> None:
        self.model = model
        self.model_sampling = model.model_sampling
        self.positive = positive
        self.negative = negative
        self.cfg = cfg

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict | None = None, **_: Any) -> torch.Tensor:
        options = model_options or {}
        # cfg 1: the negative cannot change the result, so ComfyUI skips it (unless told not to).
        skip_uncond = math.isclose(self.cfg, 1.0) and not options.get("disable_cfg1_optimization", False)
        uncond = None if skip_uncond else self.negative
        cond_pred, uncond_pred = calc_cond_batch(self.model, [self.positive, uncond], x, sigma)
        result = uncond_pred + (cond_pred - uncond_pred) * self.cfg
        for hook in options.get("sampler_post_cfg_function", []):
            result = hook({"denoised": result, "cond_denoised": cond_pred, "uncond_denoised": uncond_pred,
                           "cond_scale": self.cfg, "sigma": sigma, "input": x, "model": self.model,
                           "model_options": options})
        return result


class InpaintDenoiser:
    """Outside the noise mask, the latent is held on the original image (noised to the current
    sigma) going in, and on the original coming out (ComfyUI's KSamplerX0Inpaint)."""

    def __init__(self, inner: Callable[..., torch.Tensor], model_sampling: Any, latent_image: torch.Tensor,
                 noise: torch.Tensor, mask: torch.Tensor | None) -> None:
        self.inner = inner
        self.model_sampling = model_sampling  # samplers read the noise schedule from the denoiser
        self.latent_image = latent_image
        self.noise = noise
        self.mask = mask

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra: Any) -> torch.Tensor:
        mask = self.mask
        if mask is not None:
            keep = 1.0 - mask
            noised = self.model_sampling.noise_scaling(
                sigma.reshape([sigma.shape[0]] + [1] * (self.noise.ndim - 1)), self.noise, self.latent_image)
            x = x * mask + noised * keep
        out = self.inner(x, sigma, **extra)
        if mask is not None:
            out = out * mask + self.latent_image * keep
        return out


def prepare_mask(mask: torch.Tensor, shape: torch.Size, device: torch.device) -> torch.Tensor:
    """A noise mask resized to the latent, repeated over channels and the batch."""
    mask = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
    mask = torch.nn.functional.interpolate(mask, size=(shape[2], shape[3]), mode="bilinear")
    mask = torch.cat([mask] * shape[1], dim=1)
    return repeat_to_batch_size(mask, shape[0]).to(device)
