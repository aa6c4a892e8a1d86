"""The directional chain rule against independent answers: the gradient of the active
pieces at params + ε·v in float64, and PyTorch itself where no tie occurs."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dltheory.autodiff import (
    UnhandledKinkError,
    active_pieces_gradient,
    exact_kinks,
    subgradient,
)

ZERO = torch.tensor(0.0, dtype=torch.float64)

# (program, point, the true derivative): compositions that are identically a smooth function
IDENTITIES = [
    (lambda x: torch.relu(x) - torch.relu(-x), 1.0),  # = x, the talk's example
    (lambda x: torch.relu(x) - torch.maximum(x, 0 * x), 0.0),  # = 0
    (lambda x: x.abs() - 2 * torch.relu(x) + x, 0.0),  # = 0
    (lambda x: F.leaky_relu(x, 0.1) - F.leaky_relu(-x, 0.1), 1.1),  # = 1.1 x
    (lambda x: F.hardtanh(x - 1) - (x - 1).clamp(-1, 1), 0.0),  # = 0, at the bound x − 1 = 0 → use 1
    (lambda x: F.relu6(x) - x.clamp(0, 6), 0.0),
]


@pytest.mark.parametrize("program, truth", IDENTITIES)
def test_identities_written_with_kinks_get_the_true_derivative(program, truth):
    for v in (1.0, -1.0, 0.3):
        got = subgradient(program, ZERO, direction=torch.tensor(v, dtype=torch.float64))
        assert float(got) == pytest.approx(truth, abs=1e-12)


def test_pytorch_alone_is_wrong_on_the_talks_example():
    x = ZERO.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(torch.relu(x) - torch.relu(-x), x)
    assert float(g) == 0.0  # the negative control: PyTorch 2.13 says 0, the truth is 1


def test_max_with_ties_minus_its_permutation_is_zero():
    x = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    perm = torch.tensor([1, 0, 2])
    program = lambda v: v.max(dim=0).values - v[perm].max(dim=0).values  # noqa: E731
    for seed in range(5):
        g = subgradient(program, x, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(g, torch.zeros(3, dtype=torch.float64))


def _random_program(weights1, weights2, use_abs, use_max):
    W1 = torch.tensor(weights1, dtype=torch.float64)
    W2 = torch.tensor(weights2, dtype=torch.float64)

    def program(x):
        h = W1 @ x
        z = torch.relu(h)
        if use_abs:
            z = z + (h - 1).abs()
        out = W2 @ z
        if use_max:
            out = out + torch.maximum(h[0], h[-1]) - (W1 @ x).amax()
        return out
    return program


small_ints = st.integers(min_value=-2, max_value=2)


@settings(max_examples=60, deadline=None)
@given(
    d=st.integers(1, 3), h=st.integers(2, 4), data=st.data(), use_abs=st.booleans(),
    use_max=st.booleans(), seed=st.integers(0, 2**16),
)
def test_subgradient_is_the_gradient_of_the_active_pieces(d, h, data, use_abs, use_max, seed):
    # integer weights and points: ties everywhere
    w1 = data.draw(st.lists(st.lists(small_ints, min_size=d, max_size=d), min_size=h, max_size=h))
    assume(all(any(row) for row in w1))  # a zero row is a kink that no direction leaves
    w2 = data.draw(st.lists(small_ints, min_size=h, max_size=h))
    x = torch.tensor(data.draw(st.lists(small_ints, min_size=d, max_size=d)), dtype=torch.float64)
    program = _random_program(w1, w2, use_abs, use_max)
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    got, report = subgradient(program, x, direction=v, return_report=True)
    eps = 1e-7
    # the reference point must sit on no kink: every kink argument is away from its knot
    h_eps = torch.tensor(w1, dtype=torch.float64) @ (x + eps * v)
    assert (h_eps.abs() > 1e-12).all() and ((h_eps - 1).abs() > 1e-12).all()
    want = active_pieces_gradient(program, x, v, eps=eps)
    if len({tuple(row) for row in w1}) == len(w1):
        # distinct pieces: with a Gaussian v no tie has equal tangents (identical rows tie
        # forever with equal tangents — harmless, both pieces give the same gradient)
        assert report.certified
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_without_ties_the_result_is_pytorchs_bit_for_bit(seed):
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    X = torch.randn(16, 5, generator=g)
    params = dict(net.named_parameters())
    loss = lambda p: torch.func.functional_call(net, p, (X,)).abs().mean()  # noqa: E731
    ours = subgradient(loss, {k: v.detach() for k, v in params.items()}, generator=g)
    theirs = torch.autograd.grad(loss(params), list(params.values()))
    for (name, a), b in zip(ours.items(), theirs):
        assert torch.equal(a, b), name


def test_exact_kinks_trains_an_unchanged_sequential_relu_net_with_sgd():
    def train(mode):
        net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
        with torch.no_grad():  # integer weights and inputs: pre-activations hit exact zeros
            net[0].weight.copy_(torch.tensor([[1.0, -1.0], [1.0, 0.0], [0.0, 1.0]]))
            net[0].bias.zero_()
            net[2].weight.copy_(torch.tensor([[1.0, -0.5, 0.25]]))
            net[2].bias.fill_(0.1)
        opt = torch.optim.SGD(net.parameters(), lr=0.05)
        X = torch.tensor([[1.0, 1.0], [0.0, 2.0], [2.0, 0.0], [0.0, 0.0]])
        y = torch.tensor([[1.0], [2.0], [0.0], [1.0]])
        with mode:
            for _ in range(3):
                opt.zero_grad()
                torch.nn.functional.mse_loss(net(X), y).backward()
                opt.step()
        return [p.detach().clone() for p in net.parameters()]

    from contextlib import nullcontext

    mode = exact_kinks(generator=torch.Generator().manual_seed(1))
    ours, plain = train(mode), train(nullcontext())
    assert mode.report.ties["relu"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(ours, plain))


def test_strict_mode_names_an_op_without_a_rule():
    x = torch.ones(1, 1, 4, requires_grad=True)
    with pytest.raises(UnhandledKinkError, match="max_pool1d"):
        with exact_kinks(strict=True):
            F.max_pool1d(x, 2)
    with pytest.warns(UserWarning, match="max_pool1d"):
        with exact_kinks() as mode:
            F.max_pool1d(x, 2)
    assert mode.report.unhandled["max_pool1d"] == 1 and not mode.report.certified


def test_bad_params_and_directions_are_user_errors():
    from dltheory.errors import UserError

    with pytest.raises(UserError, match="floating-point"):
        subgradient(lambda x: x.sum(), torch.tensor([1, 2]))
    with pytest.raises(UserError, match="shapes"):
        subgradient(lambda x: x.sum(), torch.zeros(3), direction=torch.zeros(2))
