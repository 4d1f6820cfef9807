"""LoRA names → patched weights: kohya, diffusers and PEFT conventions, alpha scaling, and the
keys nothing uses (logged, as ComfyUI warns)."""

from __future__ import annotations

import logging

import torch

from comfyserve.models.lora import apply_lora, clip_key_map, patches_for


class FakeClip:
    def __init__(self, encoders=("clip_l",)):
        self.encoders = encoders
        self.patches = {}

    def weight_keys(self):
        return [f"{e}.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight" for e in self.encoders]

    def clone(self):
        return FakeClip(self.encoders)

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        self.patches.update({k: (strength_patch, p) for k, p in patches.items()})
        return list(patches)


class FakeModel(FakeClip):
    def lora_key_map(self):
        return {"lora_unet_down_blocks_0_attentions_0_proj_in": "down_blocks.0.attentions.0.proj_in.weight",
                "unet.down_blocks.0.attentions.0.proj_in": "down_blocks.0.attentions.0.proj_in.weight"}

    def clone(self):
        return FakeModel()


def test_clip_names_per_encoder():
    single = clip_key_map(FakeClip())
    assert single["lora_te_text_model_encoder_layers_0_self_attn_q_proj"].startswith("clip_l.")
    assert single["text_encoder.text_model.encoder.layers.0.self_attn.q_proj"].startswith("clip_l.")
    sdxl = clip_key_map(FakeClip(("clip_l", "clip_g")))
    assert sdxl["lora_te1_text_model_encoder_layers_0_self_attn_q_proj"].startswith("clip_l.")
    assert sdxl["lora_te2_text_model_encoder_layers_0_self_attn_q_proj"].startswith("clip_g.")
    assert sdxl["lora_te_text_model_encoder_layers_0_self_attn_q_proj"].startswith("clip_l.")
    assert sdxl["text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj"].startswith("clip_g.")


def test_kohya_and_peft_pairs_scale_by_alpha_over_rank():
    up, down = torch.randn(6, 4), torch.randn(4, 5)
    kohya = {"m.lora_up.weight": up, "m.lora_down.weight": down, "m.alpha": torch.tensor(2.0)}
    patches, used = patches_for(kohya, {"m": "w"})
    assert used == set(kohya)
    assert torch.allclose(patches["w"](torch.zeros(6, 5)), 0.5 * up @ down)
    peft, _ = patches_for({"m.lora_B.weight": up, "m.lora_A.weight": down}, {"m": "w"})
    assert torch.allclose(peft["w"](torch.zeros(6, 5)), up @ down)  # no alpha: scale 1


def test_apply_lora_patches_clones_and_reports_unused_keys(caplog):
    model, clip = FakeModel(), FakeClip()
    lora = {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.randn(3, 2, 1, 1),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.randn(2, 3, 1, 1),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.randn(4, 2),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.randn(2, 4),
        "lora_te_nothing_here.lora_up.weight": torch.randn(1, 1),
    }
    with caplog.at_level(logging.WARNING):
        new_model, new_clip = apply_lora(model, clip, lora, 0.8, 0.6)
    assert new_model is not model and new_clip is not clip
    assert not model.patches and not clip.patches  # the originals are untouched
    assert new_model.patches["down_blocks.0.attentions.0.proj_in.weight"][0] == 0.8
    strength, text_patch = new_clip.patches["clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"]
    assert strength == 0.6
    weight = torch.ones(4, 4)
    delta = lora["lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"] @ lora[
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"]
    assert torch.allclose(text_patch.calculate_weight(weight, "k", 0.6), weight + 0.6 * delta)
    assert ["lora key not loaded: lora_te_nothing_here.lora_up.weight"] == [
        r.getMessage() for r in caplog.records if "not loaded" in r.getMessage()]
