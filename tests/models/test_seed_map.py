"""``seed_map``: an elementwise function over seed-stacked tensors, every slice bit for bit
its one-seed run.

Plain ``f(x)`` fails this where ATen's vector and scalar code round differently: its
elementwise loops run the coalesced tensor in blocks of two vector registers and the
remainder through the scalar function, so a seed's last elements take one path alone and
the other in a batch. Measured: float32 softplus on an AVX-512 host (``lazy-training-resnet``
lost its batched = alone test there, at 6 points × 24 units = 144 floats per seed).
"""

import random

import pytest
import torch
from torch.nn import functional as F

from dltheory.models import seed_map

_RNG = random.Random(0)
FUNCTIONS = {"softplus": F.softplus, "sigmoid": torch.sigmoid, "exp": torch.exp,
             "tanh": torch.tanh, "log1p_abs": lambda t: torch.log1p(t.abs()), "logsigmoid": F.logsigmoid,
             "gelu": F.gelu, "erf": torch.erf}
# Per-seed shapes: lazy-training-resnet's (6, 24), then random ones, some with unit sides.
SHAPES = [(6, 24), (1, 7), (3, 1, 5)] + [(_RNG.randint(1, 40), _RNG.randint(1, 40))
                                         for _ in range(12)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_every_slice_is_its_one_seed_run(name, dtype, threads):
    f = FUNCTIONS[name]
    gen = torch.Generator().manual_seed(2)
    for shape in SHAPES:
        for S in (2, 3, 16):
            x = 3 * torch.randn(S, *shape, generator=gen, dtype=dtype)
            y = seed_map(f, x)
            assert y.shape == x.shape
            for k in range(S):
                alone = seed_map(f, x[k:k + 1].clone())[0]
                assert torch.equal(y[k], alone), (name, dtype, shape, S, k)
                assert torch.allclose(y[k], f(x[k]), rtol=1e-5 if dtype == torch.float32 else 1e-12,
                                      atol=0)


def test_non_contiguous_empty_and_one_dimensional_inputs():
    x = torch.randn(4, 6, 24).mT  # (4, 24, 6), non-contiguous
    y = seed_map(torch.sigmoid, x)
    assert torch.equal(y, torch.sigmoid(x.contiguous()))
    assert seed_map(torch.exp, torch.zeros(0, 3)).shape == (0, 3)
    assert torch.equal(seed_map(torch.exp, torch.ones(3)), torch.exp(torch.ones(3)))


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() != "AVX512",
                    reason="the control's shape shows the scalar remainder on AVX-512 only")
def test_control_plain_softplus_differs_by_batch_on_avx512():
    # The case that broke lazy-training-resnet: 144 floats per seed, not a whole number of
    # 32-float blocks, so the scalar remainder falls on other elements in a batch of 3.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 24, generator=gen)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        y = F.softplus(x)
        alone = [F.softplus(x[k:k + 1].clone())[0] for k in range(3)]
    finally:
        torch.set_num_threads(before)
    assert not all(torch.equal(y[k], alone[k]) for k in range(3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_tensors_that_a_kernel_would_split_across_threads(dtype, threads):
    # Over 32768 elements ATen splits an elementwise kernel across threads at places that
    # depend on the tensor's size; seed_map runs it on one thread.
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 130, 257, generator=gen, dtype=dtype)
    y = seed_map(F.softplus, x)
    for k in range(3):
        assert torch.equal(y[k], seed_map(F.softplus, x[k:k + 1].clone())[0])
