"""Loader and VAE nodes, model files and the model cache, on tiny models in a scratch base
directory (no server): what each node returns, what is shared, and how failures read."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import nodes.latent as latent_nodes
import nodes.loaders as loaders
import nodes.vae as vae_nodes
from comfyserve import runtime
from comfyserve.config import Settings
from comfyserve.models import cache, checkpoint
from comfyserve.models.diffusion import DiffusionModel
from comfyserve.models.files import ModelFileError, load_state_dict
from comfyserve.models.vae import VAE, PixelSpaceVAE
from comfyserve.paths import Folders
from tests.models import ldm_layout as L


@pytest.fixture
def base(tmp_path, monkeypatch) -> Path:
    settings = Settings(base_directory=tmp_path)
    folders = Folders.from_settings(settings)
    folders.ensure()
    monkeypatch.setattr(runtime, "_settings", settings)
    monkeypatch.setattr(runtime, "_folders", folders)
    cache.MODELS.unload_all()
    yield tmp_path
    cache.MODELS.unload_all()


class StubClip:
    def __init__(self, state_dicts, family):
        self.state_dicts, self.family, self.layer = state_dicts, family, None

    def clone(self):
        other = StubClip(self.state_dicts, self.family)
        other.layer = self.layer
        return other

    def clip_layer(self, layer):
        self.layer = layer


@pytest.fixture
def stub_text(monkeypatch):
    calls = []

    def load_clip(state_dicts, family):
        calls.append((sorted(state_dicts), family))
        return StubClip(state_dicts, family)

    monkeypatch.setattr(checkpoint, "_text_loader", lambda: load_clip)
    return calls


def write(path: Path, tensors: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def tiny_checkpoint(base: Path, name: str = "tiny.safetensors", family: str = "sd1") -> Path:
    cfg = {"sd1": L.sd1(), "sdxl": L.sdxl(channel_mult=(1, 2), depth=(0, 1), depth_middle=1, num_res_blocks=1)}[family]
    return write(base / "models" / "checkpoints" / name, L.checkpoint(cfg, family, seed=7))


# -- model files ----------------------------------------------------------------------------
def test_pickled_checkpoints_load_weights_only(tmp_path):
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": {"a.weight": torch.ones(2)}, "global_step": 10}, path)
    assert list(load_state_dict(path)) == ["a.weight"]


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/comfyserve-should-not-exist",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"x": Evil()}, handle)
    with pytest.raises(ModelFileError, match="evil.pt.*weights-only"):
        load_state_dict(path)
    assert not Path("/tmp/comfyserve-should-not-exist").exists()


@pytest.mark.parametrize(("name", "content", "message"), [
    ("broken.safetensors", b"not a safetensors file", "broken.safetensors"),
    ("model.gguf", b"x", "Unsupported model file type"),
])
def test_unreadable_files_are_named(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ModelFileError, match=message):
        load_state_dict(tmp_path / name)


# -- checkpoint loader ------------------------------------------------------------------------
def test_checkpoint_loader_returns_model_clip_vae_and_shares_them(base, stub_text):
    path = tiny_checkpoint(base)
    node = loaders.CheckpointLoaderSimple()
    model, clip, vae = node.load_checkpoint("tiny.safetensors")
    assert isinstance(model, DiffusionModel) and isinstance(vae, VAE) and isinstance(clip, StubClip)
    assert (model.family, model.prediction) == ("sd1", "eps")
    assert stub_text == [(["clip_l"], "sd1")]
    assert "text_model.encoder.layers.0.mlp.fc1.weight" in clip.state_dicts["clip_l"]
    again = loaders.CheckpointLoaderSimple().load_checkpoint("tiny.safetensors")
    assert again[0] is model and again[2] is vae and len(stub_text) == 1
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert loaders.CheckpointLoaderSimple().load_checkpoint("tiny.safetensors")[0] is not model
    cache.unload_models(unload_models=True)
    assert len(cache.MODELS) == 0


def test_pending_clip_until_the_text_package_provides_load_clip(base, monkeypatch):
    tiny_checkpoint(base)
    monkeypatch.setattr(checkpoint, "_text_loader", lambda: None)
    _, clip, _ = loaders.CheckpointLoaderSimple().load_checkpoint("tiny.safetensors")
    assert isinstance(clip, checkpoint.PendingClip) and set(clip.state_dicts) == {"clip_l"}
    with pytest.raises(RuntimeError, match="load_clip is missing"):
        clip.tokenize("a cat")
    monkeypatch.setattr(checkpoint, "_text_loader", lambda: StubClip)
    assert clip.family == "sd1" and clip.clone().family == "sd1"  # resolved on first use


def test_sdxl_checkpoint_splits_both_text_encoders(base, stub_text):
    tiny_checkpoint(base, "xl.safetensors", "sdxl")
    model, clip, vae = loaders.CheckpointLoaderSimple().load_checkpoint("xl.safetensors")
    assert model.family == "sdxl" and model.latent_format.scale_factor == 0.13025
    assert stub_text == [(["clip_g", "clip_l"], "sdxl")]
    assert "transformer.resblocks.0.attn.in_proj_weight" in clip.state_dicts["clip_g"]


def test_missing_file_reads_like_comfyui(base):
    with pytest.raises(FileNotFoundError, match="Model in folder 'checkpoints' with filename 'nope.safetensors' not found."):
        loaders.CheckpointLoaderSimple().load_checkpoint("nope.safetensors")


def test_a_lora_in_the_checkpoint_folder_is_explained(base):
    write(base / "models" / "checkpoints" / "lora.safetensors",
          {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 64, 1, 1)})
    with pytest.raises(checkpoint.CheckpointError, match="Could not detect model type.*lora.safetensors(.|\n)*LoRA"):
        loaders.CheckpointLoaderSimple().load_checkpoint("lora.safetensors")


def test_checkpoint_loader_with_config_reads_v_and_layer_idx(base, stub_text):
    pytest.importorskip("comfyserve.sampling.model_sampling")
    tiny_checkpoint(base)
    config = base / "models" / "configs" / "v2-inference-v.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("model:\n  params:\n    parameterization: v\n    cond_stage_config:\n      params:\n        layer_idx: -2\n")
    model, clip, _ = loaders.CheckpointLoader().load_checkpoint("v2-inference-v.yaml", "tiny.safetensors")
    plain_model, plain_clip, _ = loaders.CheckpointLoaderSimple().load_checkpoint("tiny.safetensors")
    assert type(model.model_sampling).__name__.endswith("V") and model is not plain_model
    assert type(plain_model.model_sampling).__name__.endswith("EPS")
    assert clip.layer == -2 and plain_clip.layer is None


# -- other loaders --------------------------------------------------------------------------
def test_unet_loader_bare_file_and_fp8(base):
    write(base / "models" / "diffusion_models" / "unet.safetensors", L.fill(L.unet_shapes(L.sd1(), prefix=""), seed=1))
    (model,) = loaders.UNETLoader().load_unet("unet.safetensors", "default")
    (fp8,) = loaders.UNETLoader().load_unet("unet.safetensors", "fp8_e4m3fn")
    assert model.family == "sd1" and fp8 is not model
    weight = model.unet.conv_in.weight
    assert torch.equal(fp8.unet.conv_in.weight, weight.to(torch.float8_e4m3fn).float())
    assert not torch.equal(fp8.unet.conv_in.weight, weight)


def test_vae_loader_ldm_and_diffusers_files(base):
    assert isinstance(loaders.VAELoader().load_vae("pixel_space")[0], PixelSpaceVAE)
    write(base / "models" / "vae" / "ldm.safetensors", L.fill(L.vae_shapes(prefix=""), seed=1))
    (ldm,) = loaders.VAELoader().load_vae("ldm.safetensors")
    # The same weights in diffusers' layout (old attention names) decode identically.
    from diffusers import AutoencoderKL

    diffusers_sd = {k: v.clone() for k, v in ldm.autoencoder.state_dict().items()}
    old_names = {k.replace(".to_q.", ".query.").replace(".to_k.", ".key.").replace(".to_v.", ".value.")
                 .replace(".to_out.0.", ".proj_attn."): v for k, v in diffusers_sd.items()}
    assert isinstance(ldm.autoencoder, AutoencoderKL)
    write(base / "models" / "vae" / "diffusion_pytorch_model.safetensors", old_names)
    (converted,) = loaders.VAELoader().load_vae("diffusion_pytorch_model.safetensors")
    latent = torch.randn(1, 4, 3, 3)
    assert torch.allclose(converted.decode(latent), ldm.decode(latent), atol=1e-6)
    assert loaders.VAELoader.INPUT_TYPES()["required"]["vae_name"][0] == [
        "diffusion_pytorch_model.safetensors", "ldm.safetensors", "pixel_space"]


def test_clip_loaders_classify_text_encoder_files(base, stub_text):
    folder = base / "models" / "text_encoders"
    write(folder / "clip_l.safetensors", L.fill(L.clip_hf_shapes("", hidden=768, layers=1, vocab=10)))
    write(folder / "clip_g.safetensors", L.fill(L.open_clip_shapes("", hidden=1280, layers=1, vocab=10)))
    (clip,) = loaders.CLIPLoader().load_clip("clip_l.safetensors", "stable_diffusion")
    assert clip.family == "sd1" and list(clip.state_dicts) == ["clip_l"]
    (dual,) = loaders.DualCLIPLoader().load_clip("clip_l.safetensors", "clip_g.safetensors", "sdxl")
    assert dual.family == "sdxl" and sorted(dual.state_dicts) == ["clip_g", "clip_l"]
    with pytest.raises(checkpoint.CheckpointError, match="'flux' is not supported"):
        loaders.DualCLIPLoader().load_clip("clip_l.safetensors", "clip_g.safetensors", "flux")


# -- VAE nodes ------------------------------------------------------------------------------
class RecordingVAE:
    downscale_ratio = 8

    def __init__(self):
        self.encoded = None
        self.tiled = None

    def encode(self, pixels):
        self.encoded = pixels.clone()
        return torch.zeros(pixels.shape[0], 4, pixels.shape[1] // 8, pixels.shape[2] // 8)

    def spacial_compression_decode(self):
        return 8

    def decode_tiled(self, samples, **kw):
        self.tiled = kw
        return torch.zeros(1, 8, 8, 3)


def test_vae_encode_for_inpaint_formula():
    vae = RecordingVAE()
    pixels = torch.rand(1, 20, 18, 3)
    mask = torch.zeros(1, 20, 18)
    mask[:, 5:9, 4:7] = 1.0
    (latent,) = vae_nodes.VAEEncodeForInpaint().encode(vae, pixels, mask, grow_mask_by=6)
    # 20x18 is cropped to 16x16 from offsets (2, 1); masked pixels become 0.5 grey.
    cropped, crop_mask = pixels[:, 2:18, 1:17], mask[:, 2:18, 1:17]
    expected = cropped.clone()
    expected[crop_mask > 0.5] = 0.5
    assert torch.allclose(vae.encoded, expected)
    noise_mask = latent["noise_mask"]
    assert noise_mask.shape == (1, 1, 16, 16)
    grown = torch.nn.functional.conv2d(crop_mask[:, None], torch.ones(1, 1, 6, 6), padding=3).clamp(0, 1)[:, :, :16, :16]
    assert torch.equal(noise_mask, grown.round())
    (plain,) = vae_nodes.VAEEncodeForInpaint().encode(vae, pixels, mask, grow_mask_by=0)
    assert torch.equal(plain["noise_mask"], crop_mask[:, None].round())


def test_vae_decode_tiled_converts_pixel_sizes():
    vae = RecordingVAE()
    vae_nodes.VAEDecodeTiled().decode(vae, {"samples": torch.zeros(1, 4, 8, 8)}, tile_size=256, overlap=96)
    assert vae.tiled == {"tile_x": 32, "tile_y": 32, "overlap": 8}  # overlap capped at a quarter tile
    vae_nodes.VAEDecodeTiled().decode(vae, {"samples": torch.zeros(1, 4, 8, 8)}, tile_size=512, overlap=64)
    assert vae.tiled == {"tile_x": 64, "tile_y": 64, "overlap": 8}


def test_vae_nodes_on_a_real_tiny_vae(base):
    write(base / "models" / "vae" / "ldm.safetensors", L.fill(L.vae_shapes(prefix=""), seed=1))
    (vae,) = loaders.VAELoader().load_vae("ldm.safetensors")
    image = torch.rand(1, 12, 10, 3)
    (latent,) = vae_nodes.VAEEncode().encode(vae, image)
    (tiled,) = vae_nodes.VAEEncodeTiled().encode(vae, image, tile_size=64, overlap=0)
    assert torch.allclose(latent["samples"], tiled["samples"], atol=1e-5)  # one tile: the same
    (decoded,) = vae_nodes.VAEDecode().decode(vae, latent)
    (decoded_tiled,) = vae_nodes.VAEDecodeTiled().decode(vae, latent, tile_size=64, overlap=0)
    assert decoded.shape == decoded_tiled.shape == (1, 12, 10, 3)
    assert torch.allclose(decoded, decoded_tiled, atol=1e-5)


# -- latent files ---------------------------------------------------------------------------
def test_save_and_load_latent(base):
    samples = torch.randn(2, 4, 3, 5)
    result = latent_nodes.SaveLatent().save({"samples": samples}, "latents/test", prompt={"1": {"x": 1}},
                                            extra_pnginfo={"workflow": {"a": 2}})
    (entry,) = result["ui"]["latents"]
    assert entry == {"filename": "test_00001_.latent", "subfolder": "latents", "type": "output"}
    path = base / "output" / "latents" / "test_00001_.latent"
    data = load_file(str(path))
    assert set(data) == {"latent_tensor", "latent_format_version_0"} and torch.equal(data["latent_tensor"], samples)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        assert handle.metadata() == {"prompt": '{"1": {"x": 1}}', "workflow": '{"a": 2}'}
    assert latent_nodes.SaveLatent().save({"samples": samples}, "latents/test")["ui"]["latents"][0]["filename"] == \
        "test_00002_.latent"
    (base / "input" / "x.latent").write_bytes(path.read_bytes())
    save_file({"latent_tensor": samples}, str(base / "input" / "old.latent"))
    assert latent_nodes.LoadLatent.INPUT_TYPES()["required"]["latent"] == [["old.latent", "x.latent"]]
    assert torch.equal(latent_nodes.LoadLatent().load("x.latent")[0]["samples"], samples)
    assert torch.allclose(latent_nodes.LoadLatent().load("old.latent")[0]["samples"], samples / 0.18215)
    assert latent_nodes.LoadLatent.VALIDATE_INPUTS("nope.latent") == "Invalid latent file: nope.latent"
    assert len(latent_nodes.LoadLatent.IS_CHANGED("x.latent")) == 64
