"""``seed_matmul``: one batched GEMM whose every slice is bit for bit its one-seed run.

Plain ``torch.bmm`` fails this on the project's CPUs (``bench/seeds.py`` prints by how
much). Each ingredient of ``seed_matmul`` is needed here, checked by removing it on this
machine (oneMKL 2024): without pairing a lone matrix with itself, or without the zero
columns that align the output, every case fails; without 64-byte items, float64 fails;
without the one-thread cap, float64 at 4 threads fails (the thread count set, not the cores
present, decides how MKL splits the batch, so 4 threads test it on a 2-core machine too).
"""

import random

import pytest
import torch

from dltheory.errors import ShapeError
from dltheory.models._batched import seed_matmul

_RNG = random.Random(0)
# The small models' shapes (teacher-student's minibatch × input × width and its update),
# then random ones, some with unit sides.
SHAPES = [(25, 5, 20), (50, 10, 25), (50, 10, 75), (200, 10, 100), (1, 79, 64), (7, 1, 3),
          (64, 64, 1)] + [tuple(_RNG.randint(1, 120) for _ in range(3)) for _ in range(25)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_slice_is_its_one_seed_run(dtype, threads):
    gen = torch.Generator().manual_seed(1)
    S = 17
    for b, d, k in SHAPES:
        A = torch.randn(S, b, d, generator=gen, dtype=dtype)
        W = torch.randn(S, k, d, generator=gen, dtype=dtype)
        G = torch.randn(S, b, k, generator=gen, dtype=dtype)
        # x·Wᵀ (a transposed right factor) and Gᵀ·x (a transposed left factor)
        for left, right in ((A, W.mT), (G.mT, A)):
            together = seed_matmul(left, right)
            exact = torch.matmul(left.double(), right.double())
            tol = 1e-4 if dtype == torch.float32 else 1e-12
            torch.testing.assert_close(together.double(), exact, rtol=tol, atol=tol)
            assert torch.get_num_threads() == threads
            for start, count in ((0, 1), (1, 1), (5, 1), (5, 2), (3, 3), (1, 16)):
                # fresh copies (aligned as a lone run's tensors) and views at an offset
                for part_l, part_r in ((left[start:start + count].clone(),
                                        right[start:start + count].clone()),
                                       (left[start:start + count], right[start:start + count])):
                    alone = seed_matmul(part_l, part_r)
                    assert torch.equal(alone, together[start:start + count]), \
                        (b, d, k, start, count)


def test_broadcast_leading_axes_and_shapes():
    A = torch.randn(3, 4, 5, dtype=torch.float64)
    B = torch.randn(5, 6, dtype=torch.float64)
    torch.testing.assert_close(seed_matmul(A, B), A @ B)
    C = torch.randn(2, 1, 4, 5, dtype=torch.float64)
    D = torch.randn(3, 5, 2, dtype=torch.float64)
    assert seed_matmul(C, D).shape == (2, 3, 4, 2)
    torch.testing.assert_close(seed_matmul(C, D), C @ D)
    with pytest.raises(ShapeError, match="seed_matmul needs"):
        seed_matmul(A, torch.randn(4, 6, dtype=torch.float64))
    with pytest.raises(ShapeError, match="one dtype"):
        seed_matmul(A, B.float())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_are_batch_invariant_and_correct(dtype):
    # The backward runs the gradient's products through seed_matmul as well: each slice of
    # a batch's gradient is bit for bit that seed's gradient alone (torch.bmm's backward
    # is a batched GEMM that does not promise it), and the gradient is the right one.
    gen = torch.Generator().manual_seed(4)
    for b, d, k in SHAPES[:12]:
        A = torch.randn(5, b, d, generator=gen, dtype=dtype)
        W = torch.randn(5, k, d, generator=gen, dtype=dtype)
        G = torch.randn(5, b, k, generator=gen, dtype=dtype)

        def grads(a, w, g):
            a, w = a.clone().requires_grad_(), w.clone().requires_grad_()
            return torch.autograd.grad((seed_matmul(a, w.mT) * g).sum(), (a, w))

        together = grads(A, W, G)
        ref_a, ref_w = G.double() @ W.double(), G.double().mT @ A.double()  # closed form
        tol = 1e-4 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(together[0].double(), ref_a, rtol=tol, atol=tol)
        torch.testing.assert_close(together[1].double(), ref_w, rtol=tol, atol=tol)
        for s in range(5):
            alone = grads(A[s:s + 1], W[s:s + 1], G[s:s + 1])
            assert torch.equal(alone[0][0], together[0][s]) and torch.equal(alone[1][0], together[1][s]), \
                (b, d, k, s)
    a = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)  # broadcast over seeds
    assert torch.autograd.gradcheck(seed_matmul, (a, w))
