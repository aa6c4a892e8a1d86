import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from dltheory.errors import ShapeError
from dltheory.measure import (
    distance_from_init,
    empirical_ntk,
    max_neuron_movement,
    relu_ntk_gram_infinite_width,
)

D = torch.float64


def test_distance_from_init_by_hand():
    d = distance_from_init({"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([[2.0]])},
                           {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([[0.0]])})
    assert d.per_layer == {"a": 2.0, "b": 2.0}
    assert d.per_layer_relative == {"a": 2.0, "b": math.inf}
    assert d.total == pytest.approx(math.sqrt(8))
    assert d.relative == pytest.approx(math.sqrt(8))
    with pytest.raises(ShapeError):
        distance_from_init({"a": torch.ones(2)}, {"a": torch.ones(3)})


def test_max_neuron_movement_takes_the_worst_row():
    W0 = torch.zeros(3, 2)
    W = torch.tensor([[0.0, 1.0], [3.0, 4.0], [1.0, 1.0]])
    assert max_neuron_movement(W, W0) == 5.0


def test_empirical_ntk_of_a_module_equals_the_jacobian_gram():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).to(D)
    params = {n: p.detach() for n, p in model.named_parameters()}
    x = torch.randn(4, 3, generator=g, dtype=D)
    f = lambda p, x: functional_call(model, p, (x,))
    names = list(params)
    flat = lambda *t: f(dict(zip(names, t)), x)
    jac = torch.autograd.functional.jacobian(flat, tuple(params.values()))
    J = torch.cat([j.reshape(4, 2, -1) for j in jac], dim=-1)
    expected = torch.einsum("acp,bdp->abcd", J, J)
    torch.testing.assert_close(empirical_ntk(f, params, x), expected)
    scalar = lambda p, x: f(p, x)[:, 0]
    torch.testing.assert_close(empirical_ntk(scalar, params, x, x[:2]), expected[:, :2, 0, 0])


def test_wide_two_layer_relu_ntk_approaches_the_closed_form_gram():
    # Du et al.'s network f(x) = (1/√m) Σ a_r relu(w_rᵀx), first layer trained: its
    # empirical Gram is a Monte-Carlo average of H∞'s integrand over m neurons.
    g = torch.Generator().manual_seed(1)
    m = 20000
    X = torch.randn(5, 3, generator=g, dtype=D)
    X = X / X.norm(dim=1, keepdim=True)
    W = torch.randn(m, 3, generator=g, dtype=D)
    a = (2 * torch.randint(0, 2, (m,), generator=g) - 1).to(D)
    f = lambda w, x: torch.relu(x @ w.T) @ a / math.sqrt(m)
    H = relu_ntk_gram_infinite_width(X)
    assert (empirical_ntk(f, W, X) - H).abs().max() < 0.02
    # hand values: x_i = x_j gives ½‖x‖², opposite inputs give 0
    torch.testing.assert_close(relu_ntk_gram_infinite_width(torch.tensor([[2.0, 0.0], [-1.0, 0.0]])),
                               torch.tensor([[2.0, 0.0], [0.0, 0.5]]))
