"""Tiny random text encoders of every family, loaded once per test module."""

from __future__ import annotations

import pytest

from comfyserve.text import load_clip
from tests.text import tiny
from tests.text.tiny import G_PROJ, G_WIDTH, H_PROJ, H_WIDTH, L_WIDTH


@pytest.fixture(scope="module")
def emb_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("embeddings")


@pytest.fixture(scope="module")
def weights():
    return {
        "clip_l": tiny.hf_state_dict(L_WIDTH, layers=3, seed=1),
        "clip_h": tiny.hf_state_dict(H_WIDTH, layers=4, projection=H_PROJ, seed=2),
        "clip_g": tiny.hf_state_dict(G_WIDTH, layers=4, intermediate=384, projection=G_PROJ, seed=3),
    }


def _load(weights, emb_dir, family, names):
    return load_clip({n: weights[n] for n in names}, family, device="cpu", embedding_directories=[emb_dir])


@pytest.fixture(scope="module")
def sd1(weights, emb_dir):
    return _load(weights, emb_dir, "sd1", ["clip_l"])


@pytest.fixture(scope="module")
def sd2(weights, emb_dir):
    return _load(weights, emb_dir, "sd2", ["clip_h"])


@pytest.fixture(scope="module")
def sdxl(weights, emb_dir):
    return _load(weights, emb_dir, "sdxl", ["clip_l", "clip_g"])


@pytest.fixture(scope="module")
def refiner(weights, emb_dir):
    return _load(weights, emb_dir, "sdxl_refiner", ["clip_g"])
