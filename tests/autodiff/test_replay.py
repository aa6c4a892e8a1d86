"""Tangents at ties by forward-mode replay of the recorded forward pass (the whole batch,
no ``batch_dim``): the same subgradient as the double-backward tangent, the active pieces'
gradient, and no side effect on running statistics or the random generator."""

import pytest
import torch
import torch.nn.functional as F

from dltheory.autodiff import _rules, _tape, active_pieces_gradient, exact_kinks, subgradient
from tests.autodiff._same_pieces import assert_same_pieces_and_limit

F64 = torch.float64


def _bn_net(kind):
    """Samples that interact: batch norm in training mode between the kinks."""
    if kind == "mlp":
        return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                                   torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(4 * 2 * 2, 3))


def _integer_problem(kind, seed):
    """Weights and inputs in {-1, 0, 1}, float64: exact ties after the kinks (and at the
    batch-normalized values that equal their batch mean)."""
    gen = torch.Generator().manual_seed(seed)
    net = _bn_net(kind).double()
    params = {k: torch.randint(-1, 2, p.shape, generator=gen).to(F64) for k, p in net.named_parameters()}
    X = torch.randint(-1, 2, (12, 6) if kind == "mlp" else (12, 1, 8, 8), generator=gen).to(F64)
    y = torch.randint(0, 3, (12,), generator=gen)
    v = {k: torch.randn(p.shape, generator=gen, dtype=F64) for k, p in params.items()}

    def loss(p):
        return F.cross_entropy(torch.func.functional_call(net, p, (X,)), y)
    return loss, params, v, net


def _without_replay(monkeypatch):
    """Every tangent from the autograd graph by two VJPs (the replay always gives up)."""
    monkeypatch.setattr(_tape._Tape, "tangent", lambda self, u, rows, direction: None)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("seed", range(3))
def test_replayed_tangents_give_the_double_backward_subgradient(kind, seed, monkeypatch):
    loss, params, v, _ = _integer_problem(kind, seed)
    got, report = subgradient(loss, params, direction=v, return_report=True)
    with monkeypatch.context() as m:
        _without_replay(m)
        want, want_report = subgradient(loss, params, direction=v, return_report=True)
    assert_same_pieces_and_limit(loss, params, v, got, report, want, want_report)


def test_the_replay_leaves_running_statistics_alone():
    _, params, _, net = _integer_problem("cnn", 0)
    net.load_state_dict(params, strict=False)
    X = torch.randint(-1, 2, (12, 1, 8, 8), generator=torch.Generator().manual_seed(1)).to(F64)
    plain = _bn_net("cnn").double()
    plain.load_state_dict(net.state_dict())
    with exact_kinks() as mode:
        net(X).sum().backward()
    plain(X).sum().backward()
    assert mode.report.n_ties > 0
    assert torch.equal(net[1].running_mean, plain[1].running_mean)
    assert torch.equal(net[1].running_var, plain[1].running_var)
    assert int(net[1].num_batches_tracked) == 1


def test_dropout_is_not_replayed_and_does_not_draw_again():
    gen = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Dropout(0.5), torch.nn.ReLU(),
                              torch.nn.Linear(16, 1)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.randint(-1, 2, (16, 5), generator=gen))
        net[0].bias.zero_()
    X = torch.randint(-1, 2, (8, 5), generator=gen).to(F64)

    def step(mode):
        torch.manual_seed(3)
        net.zero_grad()
        with mode:
            net(X).sum().backward()
        return torch.rand(1), [p.grad.clone() for p in net.parameters()]

    mode = exact_kinks(generator=torch.Generator().manual_seed(2))
    after, grads = step(mode)
    assert mode.report.ties["relu"] > 0
    assert torch.equal(after, step(torch.autograd.set_grad_enabled(True))[0])  # one draw, as plain
    with pytest.MonkeyPatch.context() as m:
        _without_replay(m)
        _, want = step(exact_kinks(generator=torch.Generator().manual_seed(2)))
    for g, w in zip(grads, want):
        assert torch.equal(g, w)


class _Double(torch.autograd.Function):
    """2x, with no forward-mode formula: the replay cannot follow it."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad


def test_an_op_the_replay_cannot_follow_gets_the_double_backward_tangent(monkeypatch):
    fallbacks = []
    double_backward = _rules._tangent
    monkeypatch.setattr(_rules, "_tangent", lambda *a: fallbacks.append(1) or double_backward(*a))
    gen = torch.Generator().manual_seed(0)
    W1 = torch.randint(-1, 2, (6, 5), generator=gen).to(F64)
    W2 = torch.randint(-1, 2, (3, 6), generator=gen).to(F64)
    X = torch.randint(-1, 2, (8, 5), generator=gen).to(F64)

    def loss(p):
        h = torch.relu(_Double.apply(X @ p["W1"].T))
        return torch.relu(h @ p["W2"].T).sum()
    params = {"W1": W1, "W2": W2}
    v = {k: torch.randn(p.shape, generator=gen, dtype=F64) for k, p in params.items()}
    got, report = subgradient(loss, params, direction=v, return_report=True)
    assert report.ties["relu"] > 0 and fallbacks
    near = active_pieces_gradient(loss, params, v, eps=1e-9)
    for k in params:
        torch.testing.assert_close(got[k], near[k], rtol=1e-6, atol=1e-7)


def test_ties_in_a_tensor_too_large_for_a_temporary_copy_are_found():
    x = torch.randn(1030, 4100, generator=torch.Generator().manual_seed(0))  # > 2**22 entries
    x[3, 7] = x[900, 0] = x[900, 4099] = 0
    x.requires_grad_(True)
    with exact_kinks() as mode:
        (torch.relu(x) - torch.relu(-x)).sum().backward()  # the identity, written with kinks
    assert mode.report.ties["relu"] == 6  # each zero ties in both relus
    assert torch.equal(x.grad, torch.ones_like(x))
