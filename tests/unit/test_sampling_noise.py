"""Initial noise, the seed + 1 step-noise rule and the Brownian-tree noise of the SDE samplers."""

from __future__ import annotations

import pytest
import torch

from comfyserve.sampling.noise import (
    BrownianTreeNoiseSampler,
    default_noise_sampler,
    empty_noise,
    inpaint_random_noise,
    prepare_noise,
)

pytestmark = pytest.mark.filterwarnings("ignore:Should have:UserWarning")

LATENT = torch.zeros(3, 4, 8, 8)


def test_prepare_noise_is_one_global_randn_for_the_batch():
    a = prepare_noise(LATENT, 1234)
    b = prepare_noise(LATENT, 1234)
    assert a.shape == (3, 4, 8, 8) and a.dtype == torch.float32 and a.device.type == "cpu"
    assert torch.equal(a, b)
    torch.manual_seed(1234)
    assert torch.equal(a, torch.randn(3, 4, 8, 8))
    assert not torch.equal(a, prepare_noise(LATENT, 1235))
    # item 1 of a batch is not the noise of seed + 1
    assert not torch.equal(a[1], prepare_noise(LATENT[:1], 1235)[0])
    # it re-seeds the global generator, as ComfyUI does
    prepare_noise(LATENT, 7)
    after = torch.randn(1)
    torch.manual_seed(7)
    torch.randn(3, 4, 8, 8)
    assert torch.equal(after, torch.randn(1))


def test_prepare_noise_follows_the_dtype_of_the_latent():
    assert prepare_noise(LATENT.double(), 3).dtype == torch.float64


def test_batch_index_draws_one_row_per_index_up_to_the_largest():
    torch.manual_seed(99)
    rows = [torch.randn(1, 4, 8, 8) for _ in range(6)]
    got = prepare_noise(LATENT[:2], 99, [5, 2])
    assert torch.equal(got, torch.cat([rows[5], rows[2]]))
    # repeated and unordered indices
    got = prepare_noise(LATENT, 99, [3, 0, 3])
    assert torch.equal(got, torch.cat([rows[3], rows[0], rows[3]]))
    # a latent cut from a batch keeps its noise: rows of [0, 1, 2] equal a plain batch of 3 here
    assert torch.equal(prepare_noise(LATENT, 99, [0, 1, 2]), prepare_noise(LATENT, 99))


def test_empty_noise_for_add_noise_disable():
    z = empty_noise(LATENT)
    assert z.shape == LATENT.shape and not z.any()


def test_step_noise_uses_seed_plus_one_on_cpu():
    x = torch.zeros(2, 4, 8, 8)
    ns = default_noise_sampler(x, seed=41)
    first, second = ns(None, None), ns(None, None)
    g = torch.Generator().manual_seed(42)
    assert torch.equal(first, torch.randn(x.shape, generator=g))
    assert torch.equal(second, torch.randn(x.shape, generator=g))
    # a private generator: the global one is not consumed
    torch.manual_seed(5)
    expected = torch.randn(1)
    torch.manual_seed(5)
    default_noise_sampler(x, seed=41)(None, None)
    assert torch.equal(torch.randn(1), expected)


def test_step_noise_without_seed_draws_from_the_global_generator():
    x = torch.zeros(1, 4, 4, 4)
    torch.manual_seed(3)
    got = default_noise_sampler(x)(None, None)
    torch.manual_seed(3)
    assert torch.equal(got, torch.randn(1, 4, 4, 4))


def test_inpaint_random_noise_is_seed_plus_one_on_the_global_generator():
    noise = torch.zeros(1, 4, 8, 8)
    got = inpaint_random_noise(noise, 10)
    torch.manual_seed(11)
    assert torch.equal(got, torch.randn(1, 4, 8, 8))
    got = inpaint_random_noise(noise, None)  # no seed: 41 + 1
    torch.manual_seed(42)
    assert torch.equal(got, torch.randn(1, 4, 8, 8))


def test_brownian_tree_noise_is_reproducible_and_standard_normal():
    x = torch.zeros(4, 4, 32, 32)
    smin, smax = torch.tensor(0.03), torch.tensor(14.6)
    a = BrownianTreeNoiseSampler(x, smin, smax, seed=7, cpu=True)
    b = BrownianTreeNoiseSampler(x, smin, smax, seed=7, cpu=True)
    s0, s1 = torch.tensor(5.0), torch.tensor(3.0)
    n = a(s0, s1)
    assert torch.equal(n, b(s0, s1))
    assert not torch.equal(n, BrownianTreeNoiseSampler(x, smin, smax, seed=8, cpu=True)(s0, s1))
    assert n.shape == x.shape and n.dtype == torch.float32
    assert abs(float(n.mean())) < 0.03 and abs(float(n.std()) - 1) < 0.03
    # the same increment read backwards flips sign; the tree's device flag does not change values on CPU
    torch.testing.assert_close(a(s1, s0), -n)
    assert torch.equal(BrownianTreeNoiseSampler(x, smin, smax, seed=7, cpu=False)(s0, s1), n)


def test_brownian_increments_add_up():
    x = torch.zeros(1, 4, 16, 16)
    ns = BrownianTreeNoiseSampler(x, torch.tensor(0.03), torch.tensor(14.6), seed=11, cpu=True)
    a, b, c = torch.tensor(8.0), torch.tensor(4.0), torch.tensor(1.0)
    w_ab = ns(a, b) * (a - b).sqrt()
    w_bc = ns(b, c) * (b - c).sqrt()
    w_ac = ns(a, c) * (a - c).sqrt()
    torch.testing.assert_close(w_ab + w_bc, w_ac, rtol=0, atol=1e-4)
    # independent increments over disjoint intervals
    corr = torch.corrcoef(torch.stack([w_ab.flatten(), w_bc.flatten()]))[0, 1]
    assert abs(float(corr)) < 0.1


def test_brownian_tree_per_item_seeds():
    x = torch.zeros(2, 4, 8, 8)
    smin, smax = torch.tensor(0.03), torch.tensor(14.6)
    s0, s1 = torch.tensor(5.0), torch.tensor(3.0)
    both = BrownianTreeNoiseSampler(x, smin, smax, seed=[1, 2], cpu=True)(s0, s1)
    one = BrownianTreeNoiseSampler(x[:1], smin, smax, seed=1, cpu=True)(s0, s1)
    two = BrownianTreeNoiseSampler(x[:1], smin, smax, seed=2, cpu=True)(s0, s1)
    assert torch.equal(both[0], one[0]) and torch.equal(both[1], two[0])
    with pytest.raises(ValueError):
        BrownianTreeNoiseSampler(x, smin, smax, seed=[1, 2, 3])
