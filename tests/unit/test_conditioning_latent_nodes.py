"""Conditioning and latent nodes: ComfyUI's option keys and tensor arithmetic, checked by hand."""

from __future__ import annotations

import torch

from nodes.conditioning import (
    ConditioningAverage,
    ConditioningCombine,
    ConditioningConcat,
    ConditioningSetArea,
    ConditioningSetAreaPercentage,
    ConditioningSetMask,
    ConditioningSetTimestepRange,
    ConditioningZeroOut,
)
from nodes.latent_ops import (
    LatentBlend,
    LatentComposite,
    LatentCrop,
    LatentFlip,
    LatentFromBatch,
    LatentRotate,
    LatentUpscale,
    LatentUpscaleBy,
    RepeatLatentBatch,
    SetLatentNoiseMask,
    bislerp,
)


def cond(value: float, tokens: int = 77, pooled: float | None = None) -> list:
    options = {} if pooled is None else {"pooled_output": torch.full((1, 4), pooled)}
    return [[torch.full((1, tokens, 8), value), options]]


def test_combine_concat_and_average():
    a, b = cond(1.0, pooled=1.0), cond(3.0, tokens=154, pooled=5.0)
    assert len(ConditioningCombine().combine(a, b)[0]) == 2
    (concat,) = ConditioningConcat().concat(a, b)
    assert concat[0][0].shape == (1, 231, 8)
    # to·w + from·(1−w), the source cut to the target's 77 tokens; pooled likewise.
    (avg,) = ConditioningAverage().addWeighted(a, b, 0.25)
    assert torch.allclose(avg[0][0], torch.full((1, 77, 8), 1.0 * 0.25 + 3.0 * 0.75))
    assert torch.allclose(avg[0][1]["pooled_output"], torch.full((1, 4), 0.25 + 5.0 * 0.75))
    # A shorter source is zero-padded.
    (short,) = ConditioningAverage().addWeighted(b, a, 0.5)
    assert torch.allclose(short[0][0][:, :77], torch.full((1, 77, 8), 2.0))
    assert torch.allclose(short[0][0][:, 77:], torch.full((1, 77, 8), 1.5))


def test_area_mask_range_and_zero_out_options():
    base = cond(1.0, pooled=2.0)
    (area,) = ConditioningSetArea().append(base, width=64, height=128, x=64, y=8, strength=0.7)
    assert area[0][1] == {"pooled_output": base[0][1]["pooled_output"], "area": (16, 8, 1, 8),
                          "strength": 0.7, "set_area_to_bounds": False}
    assert "area" not in base[0][1]  # the input is not changed
    (pct,) = ConditioningSetAreaPercentage().append(base, width=0.5, height=0.25, x=0.1, y=0.2, strength=1.0)
    assert pct[0][1]["area"] == ("percentage", 0.25, 0.5, 0.2, 0.1)
    (masked,) = ConditioningSetMask().append(base, torch.ones(8, 8), "mask bounds", 0.5)
    assert masked[0][1]["mask"].shape == (1, 8, 8)
    assert masked[0][1]["set_area_to_bounds"] is True and masked[0][1]["mask_strength"] == 0.5
    (ranged,) = ConditioningSetTimestepRange().set_range(base, 0.2, 0.8)
    assert (ranged[0][1]["start_percent"], ranged[0][1]["end_percent"]) == (0.2, 0.8)
    (zero,) = ConditioningZeroOut().zero_out(base)
    assert not zero[0][0].any() and not zero[0][1]["pooled_output"].any()


def latent(b=1, c=4, h=8, w=8) -> dict:
    return {"samples": torch.arange(b * c * h * w, dtype=torch.float32).reshape(b, c, h, w)}


def test_upscale_sizes_and_bislerp():
    (up,) = LatentUpscale().upscale(latent(), "nearest-exact", 96, 0, "disabled")
    assert up["samples"].shape == (1, 4, 12, 12)
    (by,) = LatentUpscaleBy().upscale(latent(), "bilinear", 1.5)
    assert by["samples"].shape == (1, 4, 12, 12)
    same = torch.randn(1, 4, 5, 7)
    assert torch.allclose(bislerp(same, 7, 5), same, atol=1e-5)
    # Two orthogonal unit vectors side by side, widened from 2 to 4: bilinear positions 0, .25,
    # .75, 1 → a, slerp(a, b, 1/4), slerp(a, b, 3/4), b, each of length 1.
    a, b = torch.tensor([1.0, 0, 0, 0]), torch.tensor([0, 1.0, 0, 0])
    pair = torch.stack([a, b], dim=1).reshape(1, 4, 1, 2)
    wide = bislerp(pair, 4, 1)[0, :, 0].T
    s1, s3 = torch.sin(torch.tensor(torch.pi / 8)), torch.sin(torch.tensor(3 * torch.pi / 8))
    expected = torch.stack([a, s3 * a + s1 * b, s1 * a + s3 * b, b])
    assert torch.allclose(wide, expected, atol=1e-6)
    # Same direction counts as "equal": the left neighbour is kept, no interpolation (ComfyUI's rule).
    direction = torch.tensor([1.0, 2.0, 2.0, 4.0]).reshape(1, 4, 1, 1) / 5.0
    line = direction * torch.tensor([1.0, 3.0]).reshape(1, 1, 1, 2)
    assert torch.allclose(bislerp(line, 4, 1)[0, :, 0, 1], line[0, :, 0, 0])
    (slerped,) = LatentUpscale().upscale({"samples": pair.repeat(1, 1, 8, 4)}, "bislerp", 128, 64, "disabled")
    assert slerped["samples"].shape == (1, 4, 8, 16)


def test_batch_nodes_track_batch_index_and_masks():
    source = latent(b=4)
    (picked,) = LatentFromBatch().frombatch(source, batch_index=1, length=2)
    assert torch.equal(picked["samples"], source["samples"][1:3]) and picked["batch_index"] == [1, 2]
    (again,) = LatentFromBatch().frombatch(picked, batch_index=1, length=5)
    assert again["batch_index"] == [2] and again["samples"].shape[0] == 1
    (repeated,) = RepeatLatentBatch().repeat(picked, 3)
    assert repeated["samples"].shape[0] == 6
    assert repeated["batch_index"] == [1, 2, 3, 4, 5, 6]
    masked = {**latent(b=2), "noise_mask": torch.ones(2, 1, 8, 8)}
    assert RepeatLatentBatch().repeat(masked, 2)[0]["noise_mask"].shape == (4, 1, 8, 8)


def test_composite_crop_flip_rotate_blend_and_noise_mask():
    to = {"samples": torch.zeros(1, 4, 8, 8)}
    frm = {"samples": torch.ones(1, 4, 8, 8)}
    (comp,) = LatentComposite().composite(to, frm, x=32, y=16, feather=0)
    assert comp["samples"][0, 0, 2:, 4:].eq(1).all() and comp["samples"][0, 0, :2].eq(0).all()
    (feathered,) = LatentComposite().composite(to, frm, x=32, y=0, feather=16)
    # Two feather steps on the left edge (x != 0): weights 1/2 and 2/2.
    assert torch.allclose(feathered["samples"][0, 0, 3, 4:6], torch.tensor([0.5, 1.0]))
    (crop,) = LatentCrop().crop(latent(h=16, w=16), width=64, height=64, x=120, y=0)
    assert crop["samples"].shape == (1, 4, 8, 8)
    assert torch.equal(crop["samples"], latent(h=16, w=16)["samples"][:, :, 0:8, 8:16])
    grid = torch.arange(4.0).reshape(1, 1, 2, 2)  # [[0, 1], [2, 3]]
    assert LatentFlip().flip({"samples": grid}, "x-axis: vertically")[0]["samples"].flatten().tolist() == [2, 3, 0, 1]
    # 90 degrees clockwise: [[2, 0], [3, 1]].
    assert LatentRotate().rotate({"samples": grid}, "90 degrees")[0]["samples"].flatten().tolist() == [2, 0, 3, 1]
    (blend,) = LatentBlend().blend({"samples": torch.full((1, 4, 2, 2), 2.0)}, {"samples": torch.zeros(1, 4, 2, 2)}, 0.25)
    assert torch.allclose(blend["samples"], torch.full((1, 4, 2, 2), 0.5))
    (noise,) = SetLatentNoiseMask().set_mask(latent(), torch.ones(64, 64))
    assert noise["noise_mask"].shape == (1, 1, 64, 64)
