"""The golden sd15-mini checkpoint's CLIP-L (only its `cond_stage_model.*` tensors, generated
from the recipe and checked against the manifest's hashes): loads through the checkpoint seam,
gives RECIPE.md's activation scale (last hidden state std ~1.0) for the golden prompts, agrees
with transformers' own forward, and is deterministic. Image parity is tested end to end."""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest
import torch

from comfyserve.text import family_of, load_clip, split_text_encoders
from tests.models.golden_checkpoint import manifest, tensor_value

# The prompts of the txt2img_basic and clip_set_last_layer goldens.
POSITIVE = "a photograph of an astronaut riding a horse"
NEGATIVE = "blurry, low quality"


def clip_tensors() -> dict[str, torch.Tensor]:
    tensors = {}
    for key, entry in manifest("sd15-mini")["tensors"].items():
        if not key.startswith("cond_stage_model."):
            continue
        value = tensor_value(key, entry["shape"])
        assert hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest() == entry["sha256"], key
        tensors[key] = torch.from_numpy(value)
    return tensors


@pytest.fixture(scope="module")
def checkpoint_clip() -> dict[str, torch.Tensor]:
    return clip_tensors()


@pytest.fixture(scope="module")
def clip(checkpoint_clip, tmp_path_factory):
    encoders = split_text_encoders(checkpoint_clip)
    return load_clip(encoders, family_of(encoders), device="cpu",
                     embedding_directories=[tmp_path_factory.mktemp("embeddings")])


def test_checkpoint_clip_is_clip_l_in_hf_layout(checkpoint_clip):
    assert len(checkpoint_clip) == 197
    assert checkpoint_clip["cond_stage_model.transformer.text_model.embeddings.position_ids"].dtype == torch.int64
    encoders = split_text_encoders(checkpoint_clip)
    assert list(encoders) == ["clip_l"] and family_of(encoders) == "sd1"
    assert len(encoders["clip_l"]) == 197 and all(k.startswith("text_model.") for k in encoders["clip_l"])


def test_config_read_off_the_shapes(clip):
    shape = clip.cond_stage_model.clip_l.shape
    assert (shape.width, shape.layers, shape.heads, shape.intermediate, shape.vocab, shape.positions) == \
        (768, 12, 12, 3072, 49408, 77)
    assert shape.projection_dim is None


@pytest.mark.parametrize("prompt", [POSITIVE, NEGATIVE])
def test_last_hidden_state_has_the_recipes_scale(clip, prompt):
    (conditioning,) = [clip.encode_from_tokens_scheduled(clip.tokenize(prompt))]
    [[cond, extra]] = conditioning
    assert cond.shape == (1, 77, 768) and extra["pooled_output"].shape == (1, 768)
    assert torch.isfinite(cond).all() and torch.isfinite(extra["pooled_output"]).all()
    assert 0.9 < cond.std().item() < 1.1
    assert abs(cond.mean().item()) < 0.05


def test_matches_transformers_forward(clip):
    tokens = clip.tokenize(POSITIVE)
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    model = copy.deepcopy(clip.cond_stage_model.clip_l.model).float()
    ids = torch.tensor([[t for t, _ in tokens["l"][0]]])
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
        penultimate = getattr(model, "text_model", model).final_layer_norm(out.hidden_states[-2])
    assert torch.allclose(cond, out.last_hidden_state, atol=1e-5)
    assert torch.allclose(pooled, out.pooler_output, atol=1e-5)
    stopped = clip.clone()
    stopped.clip_layer(-2)  # the clip_set_last_layer golden
    assert torch.allclose(stopped.encode_from_tokens(tokens), penultimate, atol=1e-5)


def test_deterministic_across_calls_and_loads(clip, checkpoint_clip, tmp_path):
    tokens = clip.tokenize(POSITIVE)
    first = clip.encode_from_tokens(tokens, return_pooled=True)
    again = clip.encode_from_tokens(tokens, return_pooled=True)
    other = load_clip(split_text_encoders(checkpoint_clip), "sd1", device="cpu", embedding_directories=[tmp_path])
    reloaded = other.encode_from_tokens(other.tokenize(POSITIVE), return_pooled=True)
    for a, b in ((first, again), (first, reloaded)):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
