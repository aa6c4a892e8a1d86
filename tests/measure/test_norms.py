import math

import pytest
import torch

from dltheory.errors import ShapeError, UserError
from dltheory.measure import (
    bregman_divergence,
    effective_rank,
    fourier_norm,
    nuclear_norm,
    schatten_norm,
    stable_rank,
)

D = torch.float64


def _with_singular_values(s, seed=0):
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=D)).Q[:, :len(s)]
    V = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=D)).Q[:, :len(s)]
    return U @ torch.diag(torch.tensor(s, dtype=D)) @ V.T


def test_schatten_norms_match_hand_values_on_known_singular_values():
    W = _with_singular_values([4.0, 1.0, 0.25])
    assert float(schatten_norm(W, 1)) == pytest.approx(5.25)
    assert float(nuclear_norm(W)) == pytest.approx(5.25)
    assert float(schatten_norm(W, 2)) == pytest.approx(float(W.norm()))
    assert float(schatten_norm(W, math.inf)) == pytest.approx(4.0)
    assert float(schatten_norm(W, 0.5)) == pytest.approx((2 + 1 + 0.5) ** 2)


def test_schatten_quasi_norm_prefers_low_rank_at_equal_frobenius():
    low, spread = _with_singular_values([1.0, 0.0]), _with_singular_values([0.5 ** 0.5, 0.5 ** 0.5])
    assert float(schatten_norm(low, 0.5)) < float(schatten_norm(spread, 0.5))
    assert float(schatten_norm(low, 2)) == pytest.approx(float(schatten_norm(spread, 2)))


def test_effective_and_stable_rank():
    assert float(effective_rank(_with_singular_values([2.0, 2.0, 2.0]))) == pytest.approx(3.0)
    assert float(effective_rank(_with_singular_values([5.0]))) == pytest.approx(1.0)
    # p = (2/3, 1/3): exp(H) = exp(−⅔ln⅔ − ⅓ln⅓)
    h = -(2 / 3) * math.log(2 / 3) - (1 / 3) * math.log(1 / 3)
    assert float(effective_rank(_with_singular_values([2.0, 1.0]))) == pytest.approx(math.exp(h))
    assert float(effective_rank(torch.zeros(3, 3))) == 0.0
    assert float(stable_rank(_with_singular_values([2.0, 1.0]))) == pytest.approx(1.25)


def test_fourier_norm_hand_cases_and_parseval():
    n = 8
    delta = torch.zeros(n, dtype=D)
    delta[0] = 1.0
    assert float(fourier_norm(delta, 0.5)) == pytest.approx(n ** 2.0)   # (Σ 1^½)^2 = n²
    constant = torch.ones(n, dtype=D)
    assert float(fourier_norm(constant, 1)) == pytest.approx(n)        # only ŵ_0 = n
    w = torch.randn(3, n, generator=torch.Generator().manual_seed(1), dtype=D)
    torch.testing.assert_close(fourier_norm(w, 2), math.sqrt(n) * w.norm(dim=1))
    image = torch.zeros(4, 4, dtype=D)
    image[0, 0] = 1.0
    assert float(fourier_norm(image, math.inf, dims=2)) == pytest.approx(1.0)
    assert float(fourier_norm(image, 1, dims=2)) == pytest.approx(16.0)


def test_bregman_divergence_of_standard_potentials():
    x = torch.tensor([0.2, 0.3, 0.5], dtype=D)
    y = torch.tensor([0.4, 0.4, 0.2], dtype=D)
    half_sq = lambda v: 0.5 * v.square().sum()
    assert float(bregman_divergence(half_sq, x, y)) == pytest.approx(float(0.5 * (x - y).square().sum()))
    neg_entropy = lambda v: (v * v.log()).sum()
    kl = (x * (x / y).log()).sum() - x.sum() + y.sum()
    assert float(bregman_divergence(neg_entropy, x, y)) == pytest.approx(float(kl))


def test_norm_inputs_are_validated():
    with pytest.raises(UserError):
        schatten_norm(torch.eye(2), 0)
    with pytest.raises(ShapeError):
        nuclear_norm(torch.ones(3))
    with pytest.raises(ShapeError):
        nuclear_norm(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ShapeError):
        bregman_divergence(lambda v: v.sum(), torch.ones(2), torch.ones(3))
