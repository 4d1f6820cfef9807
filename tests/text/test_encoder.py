"""Text encoders on tiny random weights: outputs checked against transformers' own CLIP forward
(layer selection, normalisation, pooling, projection), ComfyUI's weight formula worked out
from separately encoded prompts, chunking, embeddings, layouts and weight patches."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

from comfyserve.text import family_of, load_clip, split_text_encoders
from tests.text import tiny
from tests.text.tiny import G_PROJ, G_WIDTH, H_PROJ, H_WIDTH, L_WIDTH, PROMPT, close, reference

# -- what each family produces ------------------------------------------------------------------

def test_sd1_is_the_final_normed_last_layer_and_unprojected_pooled(sd1):
    tokens = sd1.tokenize(PROMPT)
    assert list(tokens) == ["l"]
    cond, pooled = sd1.encode_from_tokens(tokens, return_pooled=True)
    assert cond.shape == (1, 77, L_WIDTH) and pooled.shape == (1, L_WIDTH)
    assert cond.dtype == torch.float32 and cond.device.type == "cpu"
    out, _, ref_pooled = reference(sd1, "clip_l", tokens["l"][0])
    assert close(cond, out.last_hidden_state)
    assert close(pooled, ref_pooled)  # the first end token's state, no projection


def test_sd1_layer_selection(sd1):
    tokens = sd1.tokenize(PROMPT)
    default = sd1.encode_from_tokens(tokens)
    out, final_norm, _ = reference(sd1, "clip_l", tokens["l"][0])
    layered = {}
    for n in (-1, -2, -3, -24):
        clip = sd1.clone()
        clip.clip_layer(n)
        layered[n] = clip.encode_from_tokens(tokens)
    assert torch.equal(layered[-1], default)
    assert torch.equal(layered[-24], default)  # beyond the depth: the last layer
    with torch.no_grad():
        assert close(layered[-2], final_norm(out.hidden_states[-2]))  # hidden layers are final-normed
        assert close(layered[-3], final_norm(out.hidden_states[-3]))
    assert sd1.layer_idx is None  # clones do not touch the original


def test_sd2_is_the_normed_penultimate_layer_and_projected_pooled(sd2):
    tokens = sd2.tokenize(PROMPT)
    assert list(tokens) == ["h"]
    assert tokens["h"][0][-1][0] == 0  # OpenCLIP pads with 0
    cond, pooled = sd2.encode_from_tokens(tokens, return_pooled=True)
    assert cond.shape == (1, 77, H_WIDTH) and pooled.shape == (1, H_PROJ)
    out, final_norm, ref_pooled = reference(sd2, "clip_h", tokens["h"][0])
    with torch.no_grad():
        assert close(cond, final_norm(out.hidden_states[-2]))
    assert close(pooled, ref_pooled)
    _, unprojected = sd2.encode_from_tokens(tokens, return_pooled="unprojected")
    assert unprojected.shape == (1, H_WIDTH)


def test_sdxl_concatenates_raw_penultimate_layers_and_returns_clip_g_pooled(sdxl):
    tokens = sdxl.tokenize(PROMPT)
    assert list(tokens) == ["g", "l"]
    cond, pooled = sdxl.encode_from_tokens(tokens, return_pooled=True)
    assert cond.shape == (1, 77, L_WIDTH + G_WIDTH) and pooled.shape == (1, G_PROJ)
    out_l, _, _ = reference(sdxl, "clip_l", tokens["l"][0])
    out_g, _, g_pooled = reference(sdxl, "clip_g", tokens["g"][0])
    assert close(cond[..., :L_WIDTH], out_l.hidden_states[-2])  # not final-normed
    assert close(cond[..., L_WIDTH:], out_g.hidden_states[-2])
    assert close(pooled, g_pooled)
    # layer -1 on SDXL: the last layer, still without the final norm (ComfyUI's quirk)
    last = sdxl.clone()
    last.clip_layer(-1)
    cond_last = last.encode_from_tokens(tokens)
    assert close(cond_last[..., L_WIDTH:], out_g.hidden_states[-1])
    assert not close(cond_last[..., L_WIDTH:], out_g.last_hidden_state)


def test_refiner_is_clip_g_alone(refiner, sdxl):
    tokens = refiner.tokenize(PROMPT)
    assert list(tokens) == ["g"]
    cond, pooled = refiner.encode_from_tokens(tokens, return_pooled=True)
    assert cond.shape == (1, 77, G_WIDTH) and pooled.shape == (1, G_PROJ)
    xl_cond, xl_pooled = sdxl.encode_from_tokens(sdxl.tokenize(PROMPT), return_pooled=True)
    assert torch.equal(cond, xl_cond[..., L_WIDTH:]) and torch.equal(pooled, xl_pooled)


# -- weights ------------------------------------------------------------------------------------

def _reweighted(tokens, key, positions, weight):
    out = {k: [list(b) for b in v] for k, v in tokens.items()}
    for p in positions:
        t, _ = out[key][0][p]
        out[key][0][p] = (t, weight)
    return out


def test_weight_one_is_the_unweighted_encoding(sd1):
    plain = sd1.encode_from_tokens(sd1.tokenize("a red cat"))
    assert torch.equal(sd1.encode_from_tokens(sd1.tokenize("a (red:1.0) cat")), plain)


def test_weight_formula_against_the_empty_prompt(sd1):
    tokens = sd1.tokenize("a red cat")
    plain = sd1.encode_from_tokens(tokens)
    empty = sd1.encode_from_tokens(sd1.tokenize(""))
    weighted = sd1.encode_from_tokens(_reweighted(tokens, "l", [2], 1.5))
    expected = (plain[:, 2] - empty[:, 2]) * 1.5 + empty[:, 2]
    assert close(weighted[:, 2], expected)
    others = [i for i in range(77) if i != 2]
    assert close(weighted[:, others], plain[:, others])
    zero = sd1.encode_from_tokens(_reweighted(tokens, "l", [1, 2, 3], 0.0))
    assert close(zero[:, 1:4], empty[:, 1:4])  # weight 0: the empty prompt at those positions


def test_prompt_syntax_weights_reach_the_encoding(sd1):
    tokens = sd1.tokenize("a (red:1.5) cat")
    assert [w for _, w in tokens["l"][0][:5]] == [1.0, 1.0, 1.5, 1.0, 1.0]
    by_hand = sd1.encode_from_tokens(_reweighted(sd1.tokenize("a red cat"), "l", [2], 1.5))
    assert torch.equal(sd1.encode_from_tokens(tokens), by_hand)


def test_sdxl_weights_apply_per_encoder(sdxl):
    tokens = sdxl.tokenize("a red cat")
    plain = sdxl.encode_from_tokens(tokens)
    empty = sdxl.encode_from_tokens(sdxl.tokenize(""))
    weighted = sdxl.encode_from_tokens(_reweighted(tokens, "g", [2], 2.0))
    assert close(weighted[:, :, :L_WIDTH], plain[:, :, :L_WIDTH])
    expected = (plain[:, 2, L_WIDTH:] - empty[:, 2, L_WIDTH:]) * 2.0 + empty[:, 2, L_WIDTH:]
    assert close(weighted[:, 2, L_WIDTH:], expected)


# -- chunks -------------------------------------------------------------------------------------

def test_long_prompts_concatenate_their_chunks(sd1):
    tokens = sd1.tokenize("cat " * 100)
    assert len(tokens["l"]) == 2
    cond, pooled = sd1.encode_from_tokens(tokens, return_pooled=True)
    assert cond.shape == (1, 154, L_WIDTH)
    first, first_pooled = sd1.encode_from_tokens({"l": tokens["l"][:1]}, return_pooled=True)
    second = sd1.encode_from_tokens({"l": tokens["l"][1:]})
    assert close(cond[:, :77], first) and close(cond[:, 77:], second)
    assert close(pooled, first_pooled)


# -- embeddings ---------------------------------------------------------------------------------

def test_embedding_vectors_are_used_as_token_embeddings(sd1, emb_dir):
    cat = sd1.tokenize("cat")["l"][0][1][0]
    table = sd1.cond_stage_model.clip_l.parameter("text_model.embeddings.token_embedding.weight")
    save_file({"emb_params": table[cat].float()[None].clone()}, str(emb_dir / "catvec.safetensors"))
    via_embedding = sd1.encode_from_tokens(sd1.tokenize("a embedding:catvec"))
    assert torch.equal(via_embedding, sd1.encode_from_tokens(sd1.tokenize("a cat")))


def test_embedding_of_the_wrong_width_is_dropped(sd1, emb_dir, caplog):
    save_file({"emb_params": torch.randn(1, L_WIDTH + 1)}, str(emb_dir / "wide.safetensors"))
    with caplog.at_level(logging.WARNING):
        cond = sd1.encode_from_tokens(sd1.tokenize("a embedding:wide cat"))
    assert "shape mismatch" in caplog.text
    assert torch.equal(cond, sd1.encode_from_tokens(sd1.tokenize("a cat")))


# -- layouts ------------------------------------------------------------------------------------

def test_openclip_layout_loads_to_the_same_encoder(weights, sd2, sdxl, emb_dir):
    from_openclip = load_clip({"clip_h": tiny.to_openclip(weights["clip_h"])}, "sd2", device="cpu",
                              embedding_directories=[emb_dir])
    tokens = sd2.tokenize(PROMPT)
    a = sd2.encode_from_tokens(tokens, return_pooled=True)
    b = from_openclip.encode_from_tokens(tokens, return_pooled=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_split_text_encoders_from_checkpoint_layouts(weights):
    l_sd, h_sd, g_sd = weights["clip_l"], weights["clip_h"], weights["clip_g"]
    unet = {"model.diffusion_model.out.2.weight": torch.zeros(1)}

    sd1 = {**unet, **{f"cond_stage_model.transformer.{k}": v for k, v in l_sd.items()}}
    assert split_text_encoders(sd1).keys() == {"clip_l"} and split_text_encoders(sd1)["clip_l"].keys() == l_sd.keys()
    legacy = {f"cond_stage_model.transformer.{k.removeprefix('text_model.')}": v for k, v in l_sd.items()}
    assert split_text_encoders(legacy)["clip_l"].keys() == l_sd.keys()

    sd2 = {**unet, **{f"cond_stage_model.model.{k}": v for k, v in tiny.to_openclip(h_sd).items()}}
    assert split_text_encoders(sd2).keys() == {"clip_h"}
    assert "transformer.resblocks.0.attn.in_proj_weight" in split_text_encoders(sd2)["clip_h"]

    xl = {**{f"conditioner.embedders.0.transformer.{k}": v for k, v in l_sd.items()},
          **{f"conditioner.embedders.1.model.{k}": v for k, v in tiny.to_openclip(g_sd).items()}}
    parts = split_text_encoders(xl)
    assert parts.keys() == {"clip_l", "clip_g"} and family_of(parts) == "sdxl"

    refiner = {f"conditioner.embedders.0.model.{k}": v for k, v in tiny.to_openclip(g_sd).items()}
    assert split_text_encoders(refiner, family="sdxl_refiner").keys() == {"clip_g"}
    assert split_text_encoders(refiner, family="sd2").keys() == {"clip_h"}  # SD2 saved in sgm layout
    assert family_of({"clip_l": 0}) == "sd1" and family_of({"clip_h": 0}) == "sd2"
    assert family_of({"clip_g": 0}) == "sdxl_refiner" and family_of({"clip_x": 0}) is None


def test_incomplete_weights_and_unknown_families_are_refused(weights):
    broken = {k: v for k, v in weights["clip_l"].items() if "layers.1.mlp.fc2" not in k}
    with pytest.raises(ValueError, match="missing"):
        load_clip({"clip_l": broken}, "sd1", device="cpu")
    with pytest.raises(ValueError, match="missing"):
        load_clip({"clip_l": weights["clip_l"]}, "sdxl", device="cpu")
    with pytest.raises(ValueError, match="unknown text encoder family"):
        load_clip({"clip_l": weights["clip_l"]}, "flux", device="cpu")


def test_outputs_are_ordinary_tensors(sd1):
    cond, pooled = sd1.encode_from_tokens(sd1.tokenize(PROMPT), return_pooled=True)
    assert not cond.is_inference() and not cond.requires_grad
    cond.mul_(2.0)  # guidance and conditioning nodes may edit conds in place
    pooled.add_(1.0)


def test_weights_are_stored_in_float16(sd1, sdxl):
    for clip in (sd1, sdxl):
        for encoder in clip.cond_stage_model.encoders.values():
            assert {p.dtype for p in encoder.model.parameters()} == {torch.float16}


# -- weight patches (the LoRA seam) -------------------------------------------------------------

def test_patches_apply_to_a_clone_only(sd1):
    key = "clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
    assert key in sd1.weight_keys()
    tokens = sd1.tokenize(PROMPT)
    base = sd1.encode_from_tokens(tokens)
    patched = sd1.clone()
    assert patched.add_patches({key: torch.ones(L_WIDTH, L_WIDTH) * 0.05, "not.a.key": torch.zeros(1)}, 0.5) == [key]
    changed = patched.encode_from_tokens(tokens)
    assert not torch.equal(changed, base)
    assert torch.equal(sd1.encode_from_tokens(tokens), base)
    nothing = sd1.clone()
    nothing.add_patches({key: torch.zeros(L_WIDTH, L_WIDTH)})
    assert torch.equal(nothing.encode_from_tokens(tokens), base)
    # the patched weight is stored like the original: float16, computed as w + 0.5 * diff
    weight = sd1.cond_stage_model.clip_l.parameter(key.partition(".transformer.")[2])
    value = patched._overrides()["clip_l"][key.partition(".transformer.")[2]]
    assert value.dtype == torch.float16 and torch.equal(value, (weight.float() + 0.025).half())


# -- nodes --------------------------------------------------------------------------------------
