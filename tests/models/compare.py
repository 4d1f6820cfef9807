"""Golden comparisons with RECIPE.md §3's measures and thresholds (per file).

Latents: d = |test - ref|; rel_mean = mean(d) / std(ref), rel_max = max(d) / std(ref).
Images (8-bit RGB): mean and max of |test - ref|.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PASS = {"latent_rel_mean": 1e-4, "latent_rel_max": 1e-3, "image_mean_abs": 0.05, "image_max_abs": 3}
STRICT = {"latent_rel_mean": 2e-5, "latent_rel_max": 2e-4, "image_mean_abs": 0.01, "image_max_abs": 1}


@dataclass
class LatentDiff:
    rel_mean: float
    rel_max: float

    def ok(self, limits: dict = STRICT) -> bool:
        return self.rel_mean <= limits["latent_rel_mean"] and self.rel_max <= limits["latent_rel_max"]


@dataclass
class ImageDiff:
    mean_abs: float
    max_abs: int

    def ok(self, limits: dict = STRICT) -> bool:
        return self.mean_abs <= limits["image_mean_abs"] and self.max_abs <= limits["image_max_abs"]


def latent_diff(test: np.ndarray, ref: np.ndarray) -> LatentDiff:
    test, ref = np.asarray(test, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert test.shape == ref.shape, (test.shape, ref.shape)
    d = np.abs(test - ref)
    scale = ref.std()
    return LatentDiff(float(d.mean() / scale), float(d.max() / scale))


def image_diff(test: np.ndarray, ref: np.ndarray) -> ImageDiff:
    test, ref = np.asarray(test, dtype=np.int32), np.asarray(ref, dtype=np.int32)
    assert test.shape == ref.shape, (test.shape, ref.shape)
    d = np.abs(test - ref)
    return ImageDiff(float(d.mean()), int(d.max()))
