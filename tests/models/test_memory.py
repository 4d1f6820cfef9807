"""The memory manager and partial offload, on the CPU: a policy with ComfyUI's NORMAL_VRAM rules
whose compute device is the CPU, a made-up free-memory budget, and checks of what the manager
moved, kept and evicted. Partial offload is also run with a "device" that is float64 (weights
used without being moved would fail), and every result is compared with the all-in-memory run."""

from __future__ import annotations

import copy
import dataclasses
import gc

import pytest
import torch

from comfyserve.models import cache, devices, memory
from comfyserve.models.detect import detect_vae
from comfyserve.models.devices import DeviceCapability, DevicePolicy, MemoryFlags, VRAMState
from comfyserve.models.memory import MemoryManager, sampling_memory
from comfyserve.models.offload import PartialOffload, module_bytes, partition
from comfyserve.models.vae import load_vae
from tests.models import ldm_layout as L
from tests.models.test_diffusion_model import tiny_model


def sampling_model(seed: int):
    """A tiny SD1 model with the real ModelSampling (what KSampler needs)."""
    from comfyserve.models.detect import detect_checkpoint
    from comfyserve.models.diffusion import make_diffusion_model
    from comfyserve.models.unet import load_unet

    sd = L.checkpoint(L.sd1(), "sd1", seed=seed, with_vae=False, with_text=False)
    info = detect_checkpoint(sd)
    unet, key_map = load_unet(sd, info.unet, "tiny-sd1")
    return make_diffusion_model(unet, info.family, info.prediction, key_map, "tiny-sd1")

KIB = 1024
AMPERE = DeviceCapability("cuda", 0, "NVIDIA A10", 8, 6, total_memory=24 << 30)
CPU = torch.device("cpu")


def standin_policy(*argv: str) -> DevicePolicy:
    """ComfyUI's rules for a CUDA card, but every device is the CPU and no reserve is kept, so
    moves cost nothing and the accounting is what the tests check."""
    base = DevicePolicy.build(MemoryFlags.from_argv(["main.py", *argv]), AMPERE)
    return dataclasses.replace(
        base, compute_device=CPU, unet_load_device=CPU, unet_offload_device=CPU, vae_device=CPU,
        vae_offload_device=CPU, text_encoder_device=CPU, text_encoder_offload_device=CPU,
        intermediate_device=CPU, extra_reserved_bytes=0, inference_reserve_bytes=0,
        unet_dtype=torch.float32, vae_dtype=torch.float32)


class Budget:
    """A device of `total` bytes: free is what the manager has not placed on it."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.manager: MemoryManager | None = None

    def __call__(self, device: torch.device) -> int:
        assert self.manager is not None
        return self.total - self.manager.loaded_bytes(device)


def manager_for(total: int, *argv: str, unit_bytes: int = 64 * KIB) -> tuple[MemoryManager, Budget]:
    budget = Budget(total)
    manager = MemoryManager(standin_policy(*argv), free_memory=budget, empty_cache=lambda d: None,
                            unit_bytes=unit_bytes)
    budget.manager = manager
    return manager, budget


def linear() -> torch.nn.Linear:
    return torch.nn.Linear(64, 64, bias=False)  # 16 KiB


class Recording(torch.nn.Linear):
    """A module that remembers where `.to()` sent it (and can run out of memory once)."""

    def __init__(self, fail_once: bool = False) -> None:
        super().__init__(64, 64, bias=False)
        self.moves: list[torch.device] = []
        self.fail_once = fail_once

    def to(self, *args, **kwargs):
        device = torch.device(args[0] if args else kwargs["device"])
        self.moves.append(device)
        if self.fail_once:
            self.fail_once = False
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 16.00 KiB")
        return super().to(*args, **kwargs)


def hooks_left(module: torch.nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in module.modules())


# -- the LRU and the budget ------------------------------------------------------------------
def test_least_recently_used_models_make_room():
    manager, budget = manager_for(40 * KIB)
    a, b, c = linear(), linear(), linear()
    manager.load([a])
    manager.load([b])
    assert manager.is_loaded(a) and manager.is_loaded(b)
    manager.load([c])  # 16 KiB more than the 8 KiB left: the least recently used (a) goes
    assert not manager.is_loaded(a) and manager.is_loaded(b) and manager.is_loaded(c)
    manager.load([b])  # used again: now c is the oldest
    manager.load([a])
    assert manager.is_loaded(a) and manager.is_loaded(b) and not manager.is_loaded(c)
    assert manager.loaded_bytes() == 32 * KIB <= budget.total
    assert all(not p.partial for p in manager.loaded())


def test_the_activation_reserve_evicts_even_when_the_model_is_already_loaded():
    manager, _ = manager_for(40 * KIB)
    a, b = linear(), linear()
    manager.load([a])
    manager.load([b])
    manager.load([a], memory_required=20 * KIB)  # 8 KiB free is not enough room to run a
    assert manager.is_loaded(a) and not manager.is_loaded(b)


def test_models_asked_for_together_do_not_evict_each_other():
    manager, _ = manager_for(40 * KIB)
    a, b, old = linear(), linear(), linear()
    manager.load([old])
    manager.load([a, b])
    assert manager.is_loaded(a) and manager.is_loaded(b) and not manager.is_loaded(old)


def test_disable_smart_memory_unloads_every_other_model():
    manager, _ = manager_for(1 << 20, "--disable-smart-memory")
    a, b = linear(), linear()
    manager.load([a])
    manager.load([b])  # plenty of room, but without smart memory a leaves anyway
    assert not manager.is_loaded(a) and manager.is_loaded(b)


def test_highvram_loads_whole_and_never_evicts_the_unet():
    manager, _ = manager_for(20 * KIB, "--highvram")
    assert manager.policy.vram_state is VRAMState.HIGH_VRAM
    a, b = linear(), linear()
    manager.load([a])
    manager.load([b])
    assert manager.is_loaded(a) and manager.is_loaded(b)  # 32 KiB on a "20 KiB" device: trusted
    assert all(not p.partial for p in manager.loaded())


def test_nothing_happens_on_the_cpu():
    manager = MemoryManager(DevicePolicy.build(MemoryFlags(cpu=True), AMPERE), free_memory=lambda d: 0)
    a = Recording()
    manager.load([a])
    assert manager.loaded() == [] and a.moves == []


def test_models_nobody_holds_are_forgotten():
    manager, _ = manager_for(1 << 20)
    manager.load([linear()])
    gc.collect()
    assert manager.loaded() == []


def test_an_out_of_memory_move_falls_back_to_partial_offload():
    manager, _ = manager_for(1 << 20)
    module = Recording(fail_once=True)
    manager.load([module])
    assert module.moves == [CPU, CPU]  # tried the device, went back to the offload device
    (placed,) = manager.loaded()
    assert placed.partial and manager.is_loaded(module)


# -- partial offload -------------------------------------------------------------------------
def test_partition_cuts_containers_and_keeps_every_weight_once():
    model = tiny_model("sd1")
    units = partition(model.unet, 256 * KIB)
    names = [id(t) for u in units for t in (owner._parameters.get(n) if p else owner._buffers[n]
                                            for owner, n, p in u.tensors)]
    assert len(names) == len(set(names)) == len([*model.unet.parameters(), *model.unet.buffers()])
    assert sum(u.nbytes for u in units) == module_bytes(model.unet)
    assert not any(isinstance(u.module, (torch.nn.ModuleList, torch.nn.ModuleDict)) for u in units)
    for unit in units:  # a whole subtree within the limit, a leaf, or a container's own weights
        direct = all(owner is unit.module for owner, _, _ in unit.tensors)
        assert unit.nbytes <= 256 * KIB or not list(unit.module.children()) or direct


def _unet_case(family: str):
    unet = tiny_model(family, seed=4).unet
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    kwargs = {"encoder_hidden_states": torch.randn(2, 5, unet.config.cross_attention_dim, dtype=torch.float64),
              "return_dict": False}
    if unet.config.class_embed_type is not None:  # SDXL's ADM vector
        kwargs["class_labels"] = torch.randn(2, unet.config.projection_class_embeddings_input_dim, dtype=torch.float64)
    return unet, lambda module: module(x, torch.tensor([10, 500]), **kwargs)[0]


def _vae_case(_family: str):
    sd = L.fill(L.vae_shapes(), seed=5)
    autoencoder = load_vae(sd, detect_vae(sd, "first_stage_model."), "tiny-vae", "first_stage_model.").autoencoder
    z = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    pixels = torch.randn(1, 3, 24, 24, dtype=torch.float64)
    return autoencoder, lambda m: (m.decoder(m.post_quant_conv(z)), m.quant_conv(m.encoder(pixels)))


@pytest.mark.parametrize(("case", "family"), [(_unet_case, "sd1"), (_unet_case, "sdxl"), (_vae_case, "")],
                         ids=["unet-sd1", "unet-sdxl", "vae"])
def test_streamed_weights_are_on_the_device_exactly_while_their_unit_runs(case, family):
    # The "device" is float64: a weight used without being moved meets float64 activations and fails.
    unet, run = case(family)
    reference = copy.deepcopy(unet).double()
    budget = module_bytes(unet) // 3
    offload = PartialOffload(unet, CPU, budget, CPU, unit_bytes=max(module_bytes(unet) // 40, 16 * KIB),
                             to_device=lambda t: t.double(), to_offload=lambda t: t.float())
    assert 0 < offload.resident_bytes <= budget and offload.streamed_units
    with torch.no_grad():
        out, expected = run(unet), run(reference)
    for got, want in zip(out if isinstance(out, tuple) else (out,),
                         expected if isinstance(expected, tuple) else (expected,), strict=True):
        assert torch.equal(got, want)
    assert offload.streamed_calls >= len(offload.streamed_units)
    assert offload.peak_bytes <= budget  # resident + the unit in flight
    for unit in offload.units:  # between calls: streamed units home again, resident ones moved
        dtypes = {owner._parameters[n].dtype for owner, n, p in unit.tensors if p}
        assert dtypes == {torch.float64 if unit.resident else torch.float32}
    offload.detach()
    assert {p.dtype for p in unet.parameters()} == {torch.float32} and hooks_left(unet) == 0


def test_a_unet_larger_than_free_memory_runs_partially_and_gives_the_same_result():
    model = tiny_model("sd1", seed=5)
    x, sigma, context = torch.randn(1, 4, 8, 8), torch.tensor([3.0]), torch.randn(1, 5, 768)
    expected = model.apply_model(x, sigma, c_crossattn=context)
    size = module_bytes(model.unet)
    manager, budget = manager_for(size // 2, unit_bytes=512 * KIB)
    manager.load([model])
    (placed,) = manager.loaded()
    assert placed.partial and 0 < placed.device_bytes <= size // 2 and placed.total_bytes == size
    assert model.device == CPU  # the first weight (conv_in) is always resident
    assert torch.equal(model.apply_model(x, sigma, c_crossattn=context), expected)
    # More memory later: the next use loads it whole and the hooks go.
    budget.total = 2 * size
    manager.load([model])
    (placed,) = manager.loaded()
    assert not placed.partial and hooks_left(model.unet) == 0
    assert torch.equal(model.apply_model(x, sigma, c_crossattn=context), expected)


def test_novram_streams_even_when_the_model_would_fit():
    model = tiny_model("sd1", seed=6)
    manager, _ = manager_for(1 << 40, "--novram", unit_bytes=512 * KIB)
    manager.load([model])
    (placed,) = manager.loaded()
    assert placed.partial and placed.device_bytes < placed.total_bytes


def test_lora_patches_survive_partial_offload():
    model = tiny_model("sd1", seed=7)
    key = "down_blocks.0.resnets.0.conv1.weight"
    weight = dict(model.unet.named_parameters())[key]
    patched = model.clone()
    assert patched.add_patches({key: torch.randn_like(weight) * 0.05}) == [key]
    x, sigma, context = torch.randn(1, 4, 8, 8), torch.tensor([2.0]), torch.randn(1, 5, 768)
    expected_plain = model.apply_model(x, sigma, c_crossattn=context)
    expected_patched = patched.apply_model(x, sigma, c_crossattn=context)
    assert not torch.equal(expected_plain, expected_patched)
    manager, _ = manager_for(module_bytes(model.unet) // 3, unit_bytes=256 * KIB)
    manager.load([patched])
    assert manager.loaded()[0].partial
    assert torch.equal(patched.apply_model(x, sigma, c_crossattn=context), expected_patched)
    manager.load([model])  # the same shared UNet: already placed
    assert torch.equal(model.apply_model(x, sigma, c_crossattn=context), expected_plain)
    assert torch.equal(patched.apply_model(x, sigma, c_crossattn=context), expected_patched)


# -- the model values --------------------------------------------------------------------------
@pytest.fixture
def standin_server(monkeypatch):
    """The server's policy and manager replaced by the stand-in ones (restored afterwards)."""
    def install(total: int, *argv: str, unit_bytes: int = 64 * KIB) -> tuple[MemoryManager, Budget]:
        manager, budget = manager_for(total, *argv, unit_bytes=unit_bytes)
        devices.set_policy(manager.policy)
        monkeypatch.setattr(memory, "MEMORY", manager)
        return manager, budget

    yield install
    devices.set_policy(None)


def test_vae_decode_and_encode_partially_offloaded_match(standin_server):
    sd = L.fill(L.vae_shapes(), seed=2)
    vae = load_vae(sd, detect_vae(sd, "first_stage_model."), "tiny-vae", "first_stage_model.")
    latent = torch.randn(1, 4, 6, 6)
    pixels = torch.rand(1, 48, 48, 3)
    image, encoded = vae.decode(latent), vae.encode(pixels)
    manager, _ = standin_server(module_bytes(vae.autoencoder) // 3, unit_bytes=32 * KIB)
    decoded = vae.decode(latent)
    assert manager.loaded()[0].partial and manager.loaded()[0].kind == "vae"
    assert torch.equal(decoded, image) and torch.equal(vae.encode(pixels), encoded)


def test_clip_is_moved_whole_or_left_where_it_is():
    class Encoder:
        def __init__(self) -> None:
            self.model = Recording()

        def to(self, device):
            self.model.to(device)
            return self

    class Stack:
        def __init__(self) -> None:
            self.encoders = {"clip_l": Encoder()}

    class Clip:
        def __init__(self) -> None:
            self.cond_stage_model = Stack()

    clip = Clip()
    assert memory.kind_of(clip) is memory.CLIP
    manager, budget = manager_for(8 * KIB)  # the 16 KiB encoder does not fit, and is never streamed
    manager.load([clip])
    assert not manager.is_loaded(clip) and clip.cond_stage_model.encoders["clip_l"].model.moves == []
    budget.total = 64 * KIB
    manager.load([clip])
    assert manager.is_loaded(clip) and clip.cond_stage_model.encoders["clip_l"].model.moves == [CPU]


def test_free_moves_every_model_off_the_device(standin_server):
    model = tiny_model("sd1", seed=8)
    manager, _ = standin_server(16 * KIB + module_bytes(model.unet) // 3, unit_bytes=512 * KIB)
    whole = Recording()
    manager.load([whole, model])  # together, so neither evicts the other
    assert [p.partial for p in manager.loaded()] == [False, True] and hooks_left(model.unet) > 0
    cache.unload_models(unload_models=True)  # what POST /free calls
    assert manager.loaded() == [] and whole.moves[-1] == CPU
    assert hooks_left(model.unet) == 0


def test_ksampler_loads_the_model_and_returns_latents_on_the_intermediate_device(standin_server):
    from comfyserve.sampling.ksampler import common_ksampler

    model = sampling_model(seed=10)
    positive = [[torch.randn(1, 5, 768), {}]]
    negative = [[torch.zeros(1, 5, 768), {}]]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    expected = common_ksampler(model, 3, 2, 5.0, "euler", "normal", positive, negative, latent)["samples"]
    manager, _ = standin_server(module_bytes(model.unet) // 3, unit_bytes=512 * KIB)
    out = common_ksampler(model, 3, 2, 5.0, "euler", "normal", positive, negative, latent)["samples"]
    (placed,) = manager.loaded()
    assert placed.kind == "unet" and placed.partial
    assert out.device == CPU and torch.equal(out, expected)


def test_sampling_memory_estimate():
    fp16 = type("M", (), {"dtype": torch.float16})()
    cuda = DevicePolicy.build(MemoryFlags(), AMPERE)
    # 2 (cond + uncond) x 64x64 latent pixels x 2 bytes x 0.01 MB x 2.0
    assert sampling_memory(fp16, (1, 4, 64, 64), cuda) == int(2 * 4096 * 2 * 0.01 * 2.0 * 1024**2)
    cpu = DevicePolicy.build(MemoryFlags(cpu=True), AMPERE)
    assert sampling_memory(fp16, (2, 4, 64, 64), cpu) == int(4 * 4096 * 0.15 * 2.0 * 1024**2)


def test_vae_encode_out_of_memory_falls_back_to_tiles(monkeypatch):
    sd = L.fill(L.vae_shapes(), seed=3)
    vae = load_vae(sd, detect_vae(sd, "first_stage_model."), "tiny-vae", "first_stage_model.")
    real_raw, real_tiled = type(vae)._encode_raw, type(vae)._encode_tiled_raw
    tiled_calls = []

    def picky(self, pixels):
        if pixels.shape[-1] * pixels.shape[-2] > 32 * 32:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real_raw(self, pixels)

    def small_tiles(self, pixels, *args):
        tiled_calls.append(args)  # the fallback uses ComfyUI's defaults
        return real_tiled(self, pixels, 32, 32, 8)

    monkeypatch.setattr(type(vae), "_encode_raw", picky)
    monkeypatch.setattr(type(vae), "_encode_tiled_raw", small_tiles)
    pixels = torch.rand(1, 48, 48, 3)
    latent = vae.encode(pixels)
    assert tiled_calls == [()] and latent.shape == (1, 4, 48 // vae.downscale_ratio, 48 // vae.downscale_ratio)
    assert torch.allclose(latent, vae.encode_tiled(pixels, 32, 32, 8), atol=1e-6)


def test_unet_and_vae_attention_is_torch_sdpa():
    from diffusers.models.attention_processor import AttnProcessor2_0

    sd = L.fill(L.vae_shapes(), seed=2)
    vae = load_vae(sd, detect_vae(sd, "first_stage_model."), "tiny-vae", "first_stage_model.")
    for module in (tiny_model("sd1").unet, vae.autoencoder):
        processors = module.attn_processors.values()
        assert processors and all(isinstance(p, AttnProcessor2_0) for p in processors)
