import math

import pytest
import torch

from dltheory.errors import ShapeError, UserError
from dltheory.measure import (
    bartlett_bound,
    gaussian_kl,
    golowich_rademacher,
    margin_bound,
    neyshabur_two_layer_rademacher,
    pac_bayes_bound,
    path_norm,
    perturbed_risk,
    spectral_complexity,
)

D = torch.float64


def test_spectral_complexity_by_hand_with_references():
    A1 = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    A2 = torch.tensor([[0.0, 2.0]])
    M1 = torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    # ‖A1‖σ = 3, ‖A2‖σ = 2; (2,1) distances: A1 − M1 has one row of norm 1, A2 one row of norm 2
    expected = 6 * ((1 / 3) ** (2 / 3) + (2 / 2) ** (2 / 3)) ** 1.5
    assert spectral_complexity([A1, A2], [M1, torch.zeros(1, 2)]) == pytest.approx(expected)
    assert spectral_complexity([A1, A2], lipschitz=[0.5, 1.0]) == pytest.approx(
        0.5 * 6 * ((4 / 3) ** (2 / 3) + 1) ** 1.5)


def test_bartlett_bound_adds_its_terms():
    W = [torch.tensor([[1.0, 1.0], [0.0, 1.0]])]
    X = torch.tensor([[1.0, 2.0], [2.0, 0.0], [0.0, 1.0]])
    R = spectral_complexity(W)
    expected = 0.25 + 8 / 3 + 72 * math.sqrt(10) * math.log(4) * math.log(3) * R / (0.5 * 3) \
        + 3 * math.sqrt(math.log(10) / 6)
    assert bartlett_bound(W, X, 0.5, margin_risk=0.25, delta=0.1) == pytest.approx(expected)


def test_golowich_and_margin_bound_by_hand():
    W = [torch.full((3, 2), 1.0), torch.full((1, 3), 2.0)]   # ‖W1‖F = √6, ‖W2‖F = √12
    rad = golowich_rademacher(W, 2.0, 25)
    assert rad == pytest.approx(2.0 * (math.sqrt(4 * math.log(2)) + 1) * math.sqrt(72) / 5)
    assert margin_bound(0.0, rad, 4.0, 25, 0.5) == pytest.approx(rad / 2 + 3 * math.sqrt(math.log(4) / 50))


def test_neyshabur_bound_by_hand_and_width_dependence():
    U0 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    U = U0 + torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    V = torch.tensor([[1.0, 0.0], [0.0, 3.0]])              # c = 2
    X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])   # ‖X‖F = 2, ‖X‖2 = √3
    total = 1 * (1 * 2 + 1 * math.sqrt(3)) + 3 * (0 * 2 + 2 * math.sqrt(3))
    expected = (2 * math.sqrt(4) + 2) / (0.5 * 3) * total
    assert neyshabur_two_layer_rademacher(U, V, U0, X, 0.5) == pytest.approx(expected)
    # duplicating every unit with halved output weights computes the same function, and
    # the bound's sum (α_j/2 over twice the units) is unchanged
    V2, U2, U02 = torch.cat([V, V], 1) / 2, torch.cat([U, U]), torch.cat([U0, U0])
    assert neyshabur_two_layer_rademacher(U2, V2, U02, X, 0.5) == pytest.approx(expected)


def test_path_norm_is_invariant_to_relu_rescaling():
    g = torch.Generator().manual_seed(0)
    W1, W2 = torch.randn(4, 3, generator=g, dtype=D), torch.randn(2, 4, generator=g, dtype=D)
    c = torch.tensor([2.0, 0.5, 3.0, 1.0], dtype=D)
    assert path_norm([c[:, None] * W1, W2 / c]) == pytest.approx(path_norm([W1, W2]))
    brute = sum((W2[k, j] * W1[j, i]) ** 2 for k in range(2) for j in range(4) for i in range(3))
    assert path_norm([W1, W2]) == pytest.approx(math.sqrt(float(brute)))


def test_pac_bayes_bound_inverts_the_binary_kl():
    kl = gaussian_kl({"w": torch.tensor([1.0, 2.0])}, 0.5, {"w": torch.zeros(2)}, 1.0)
    assert kl == pytest.approx(0.5 * (2 * 0.25 + 5 - 2 - 2 * math.log(0.25)))
    bound = pac_bayes_bound(0.1, kl, 1000, 0.05)
    budget = (kl + math.log(2 * math.sqrt(1000) / 0.05)) / 1000
    binary_kl = 0.1 * math.log(0.1 / bound) + 0.9 * math.log(0.9 / (1 - bound))
    assert binary_kl == pytest.approx(budget, rel=1e-9)
    assert 0.1 < bound <= 0.1 + math.sqrt(budget / 2)   # tighter than McAllester (Pinsker)


def test_perturbed_risk_matches_a_closed_form():
    # risk(w) = 1{w > 0} for scalar w = 0: the Gibbs risk under N(0, σ²) is ½
    w = torch.zeros(1, dtype=D)
    est = perturbed_risk(lambda v: (v > 0).double().sum(), w, 0.3, samples=2000,
                         generator=torch.Generator().manual_seed(1))
    assert est == pytest.approx(0.5, abs=0.04)
    assert torch.equal(w, torch.zeros(1, dtype=D))


def test_bound_inputs_are_validated():
    with pytest.raises(ShapeError):
        path_norm([torch.ones(2, 3), torch.ones(2, 3)])
    with pytest.raises(UserError):
        pac_bayes_bound(0.1, 1.0, 10, 1.5)
    with pytest.raises(UserError):
        bartlett_bound([torch.eye(2)], torch.ones(3, 2), 0.0, margin_risk=0.0, delta=0.1)
