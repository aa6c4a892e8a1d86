"""The directional chain rule against independent answers: the gradient of the active
pieces at params + ε·v in float64, and PyTorch itself where no tie occurs."""

from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dltheory.autodiff import (
    KinkReport,
    UnhandledKinkError,
    active_pieces_gradient,
    exact_kinks,
    subgradient,
)
from dltheory.errors import UserError

ZERO = torch.tensor(0.0, dtype=torch.float64)

# (program, the true derivative at 0): compositions that are identically a smooth function
IDENTITIES = [
    (lambda x: torch.relu(x) - torch.relu(-x), 1.0),  # = x, the talk's example
    (lambda x: torch.relu(x) - torch.maximum(x, 0 * x), 0.0),  # = 0
    (lambda x: x.abs() - 2 * torch.relu(x) + x, 0.0),  # = 0
    (lambda x: x.abs() - torch.relu(x) - torch.relu(-x), 0.0),  # = 0
    (lambda x: F.leaky_relu(x, 0.1) - F.leaky_relu(-x, 0.1), 1.1),  # = 1.1 x
    (lambda x: F.hardtanh(x - 1) - (x - 1).clamp(-1, 1), 0.0),  # = 0, at the lower bound
    (lambda x: F.hardtanh(x + 1) - (x + 1).clip(-1, 1), 0.0),  # = 0, at the upper bound
    (lambda x: F.relu6(x) - x.clamp(0, 6), 0.0),
    (lambda x: x.clamp_min(0) - torch.relu(x), 0.0),
    (lambda x: torch.minimum(x, 0 * x) + torch.relu(x), 1.0),  # = x
    (lambda x: (x.expand(3).clamp(min=torch.zeros(3, dtype=x.dtype)) - torch.relu(x)).sum(), 0.0),  # = 0
    (lambda x: (x.expand(2).clamp(max=torch.zeros(2, dtype=x.dtype)) + torch.relu(x)).sum(), 2.0),  # = 2x
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


def test_single_kinks_follow_the_direction():
    for v in (1.0, -1.0):
        d = torch.tensor(v, dtype=torch.float64)
        assert float(subgradient(torch.relu, ZERO, direction=d)) == (1.0 if v > 0 else 0.0)
        assert float(subgradient(torch.abs, ZERO, direction=d)) == v
        assert float(subgradient(lambda x: F.l1_loss(x, ZERO.clone()), ZERO, direction=d)) == v


@pytest.mark.parametrize("reduce", [
    lambda v: v.max(dim=0).values, lambda v: v.max(), lambda v: v.amax(),
    lambda v: -(-v).min(), lambda v: -(-v).amin(dim=0),
])
def test_max_with_ties_minus_its_permutation_is_zero(reduce):
    x = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    perm = torch.tensor([1, 0, 2])
    for seed in range(5):
        g = subgradient(lambda v: reduce(v) - reduce(v[perm]), x,
                        generator=torch.Generator().manual_seed(seed))
        assert torch.equal(g, torch.zeros(3, dtype=torch.float64))
    x0 = x.clone().requires_grad_(True)  # negative control: PyTorch's conventions disagree
    (g,) = torch.autograd.grad(x0.max(dim=0).values - x0[perm].max(dim=0).values, x0)
    assert not torch.equal(g, torch.zeros(3, dtype=torch.float64))


def test_max_indices_point_at_the_entry_that_gets_the_gradient():
    x = torch.tensor([[2.0, 2.0, 1.0]], dtype=torch.float64)
    for v in ([1.0, 3.0, 0.0], [3.0, 1.0, 0.0]):
        leaf = x.clone().requires_grad_(True)
        with exact_kinks(direction={id(leaf): torch.tensor([v], dtype=torch.float64)}):
            values, index = leaf.max(dim=1)
            values.sum().backward()
        assert index.item() == int(v[1] > v[0])
        assert leaf.grad[0, index.item()] == 1.0 and leaf.grad.sum() == 1.0


def test_max_pool_with_ties_minus_its_mirror_image_is_zero():
    x = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]], dtype=torch.float64)
    program = lambda v: (F.max_pool1d(v, 2) - F.max_pool1d(v.flip(-1), 2).flip(-1)).sum()  # noqa: E731
    for seed in range(5):
        g = subgradient(program, x, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(g, torch.zeros_like(x))
    x0 = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(program(x0), x0)
    assert not torch.equal(g, torch.zeros_like(x))  # PyTorch routes both to the first index


def _random_program(weights1, weights2, ops):
    W1 = torch.tensor(weights1, dtype=torch.float64)
    W2 = torch.tensor(weights2, dtype=torch.float64)

    def program(x):
        h = W1 @ x
        z = torch.relu(h)
        if "abs" in ops:
            z = z + (h - 1).abs()
        if "leaky" in ops:
            z = z + F.leaky_relu(h + 1, 0.25)
        if "clamp" in ops:
            z = z - h.clamp(-1, 2)
        out = W2 @ z
        if "max" in ops:
            out = out + torch.maximum(h[0], h[-1]) - (W1 @ x).amax()
        if "pool" in ops:
            out = out + F.max_pool1d(h.view(1, 1, -1), 2, ceil_mode=False).sum()
        return out
    return program


_KNOTS = (0.0, 1.0, -1.0, 2.0)  # where the pieces of _random_program meet
small_ints = st.integers(min_value=-2, max_value=2)


@settings(max_examples=60, deadline=None)
@given(
    d=st.integers(1, 3), h=st.integers(2, 4), data=st.data(),
    ops=st.sets(st.sampled_from(["abs", "leaky", "clamp", "max", "pool"])),
    seed=st.integers(0, 2**16),
)
def test_subgradient_is_the_gradient_of_the_active_pieces(d, h, data, ops, seed):
    # integer weights and points: ties everywhere
    w1 = data.draw(st.lists(st.lists(small_ints, min_size=d, max_size=d), min_size=h, max_size=h))
    assume(all(any(row) for row in w1))  # a zero row is a kink that no direction leaves
    w2 = data.draw(st.lists(small_ints, min_size=h, max_size=h))
    x = torch.tensor(data.draw(st.lists(small_ints, min_size=d, max_size=d)), dtype=torch.float64)
    program = _random_program(w1, w2, ops)
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    got, report = subgradient(program, x, direction=v, return_report=True)
    eps = 1e-7
    # the reference point must sit on no kink: every kink argument is away from its knot,
    # and entries compared by a max differ unless they are the same function (equal rows)
    W1 = torch.tensor(w1, dtype=torch.float64)
    h_eps = W1 @ (x + eps * v)
    for knot in _KNOTS:
        assert ((h_eps - knot).abs() > 1e-12).all()
    same_row = (W1[:, None, :] == W1[None, :, :]).all(-1)
    assert (((h_eps[:, None] - h_eps[None, :]).abs() > 1e-12) | same_row).all()
    want = active_pieces_gradient(program, x, v, eps=eps)
    if not same_row.fill_diagonal_(False).any():
        # distinct pieces: with a Gaussian v no tie has equal tangents
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


def _cnn(gen):
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 3),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return net


def _grads(net, X, y, mode):
    net.zero_grad()
    with mode:
        F.cross_entropy(net(X), y).backward()
    return [p.grad.clone() for p in net.parameters()]


def test_exact_kinks_on_a_tie_free_cnn_is_pytorch_bit_for_bit():
    gen = torch.Generator().manual_seed(0)
    net = _cnn(gen)
    X, y = torch.randn(8, 1, 8, 8, generator=gen), torch.randint(0, 3, (8,), generator=gen)
    mode = exact_kinks(generator=gen)
    ours, plain = _grads(net, X, y, mode), _grads(net, X, y, nullcontext())
    assert all(torch.equal(a, b) for a, b in zip(ours, plain))
    # relu zeros tie inside pooling windows, but they sit on relu's flat piece
    assert mode.report.flat["max_pool2d"] > 0 and mode.report.n_ties == 0


def test_background_patches_tie_in_max_pool_and_are_reported_as_identical():
    gen = torch.Generator().manual_seed(1)
    net = _cnn(gen).double()
    with torch.no_grad():
        net[0].bias.abs_()  # a constant image then gives positive, identical activations
    X = torch.ones(2, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 2])
    params = {k: p.detach() for k, p in net.named_parameters()}
    loss = lambda p: F.cross_entropy(torch.func.functional_call(net, p, (X,)), y)  # noqa: E731
    v = {k: torch.randn(p.shape, generator=gen, dtype=torch.float64) for k, p in params.items()}
    got, report = subgradient(loss, params, direction=v, return_report=True)
    assert report.identical["max_pool2d"] > 0 and report.certified
    want = active_pieces_gradient(loss, params, v, eps=1e-7)
    for k in params:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)


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
        losses = []
        with mode:
            for _ in range(20):
                opt.zero_grad()
                loss = F.mse_loss(net(X), y)
                loss.backward()
                opt.step()
                losses.append(loss.item())
        return [p.detach().clone() for p in net.parameters()], losses

    mode = exact_kinks(generator=torch.Generator().manual_seed(1))
    (ours, losses), (plain, _) = train(mode), train(nullcontext())
    assert mode.total.ties["relu"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(ours, plain))
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("relu", [
    lambda h: h.relu_(), lambda h: F.relu(h, inplace=True), lambda h: h.clamp_(min=0),
    lambda h: torch.nn.ReLU(inplace=True)(h),
])
def test_in_place_kinks_write_their_result_and_follow_the_direction(relu):
    # relu_(h) − relu(−h) = h at h = 0: the derivative is 1, whichever way in place
    for v in (1.0, -1.0):
        x = ZERO.clone().requires_grad_(True)
        with exact_kinks(direction={id(x): torch.tensor(v, dtype=torch.float64)}):
            h = x * 1.0 - 0.0
            y = relu(h)
            assert y is h  # written in place, as PyTorch does
            (h - torch.relu(-(x * 1.0))).backward()
        assert float(x.grad) == 1.0


def test_the_report_is_that_of_the_last_backward():
    x = torch.zeros(3, requires_grad=True)
    with exact_kinks() as mode:
        torch.relu(x).sum().backward()
        assert mode.report.ties["relu"] == 3
        torch.relu(x + 1).sum().backward()
    assert mode.report.n_ties == 0 and mode.total.ties["relu"] == 3
    assert isinstance(mode.report, KinkReport) and "no exact tie" in str(mode.report)


def test_a_zero_tangent_is_reported_as_undetermined():
    # relu(x²) at 0: the tangent of x² is 0 in every direction
    _, report = subgradient(lambda x: torch.relu(x * x).sum(), torch.zeros(2, dtype=torch.float64),
                            return_report=True)
    assert report.undetermined["relu"] == 2 and not report.certified
    assert "NOT certified" in str(report)


def test_strict_mode_names_an_op_without_a_rule():
    x = torch.ones(1, 5, requires_grad=True)
    with pytest.raises(UnhandledKinkError, match="topk"):
        with exact_kinks(strict=True):
            torch.topk(x, 2)
    with pytest.warns(UserWarning, match="topk") as caught:
        with exact_kinks() as mode:
            torch.topk(x, 2)
            torch.topk(x, 3)
    assert len([w for w in caught if "topk" in str(w.message)]) == 1  # once per op
    assert mode.report.unhandled["topk"] == 2 and not mode.report.certified
    with exact_kinks(strict=True):  # data that needs no gradient is no concern
        torch.topk(x.detach(), 2)


def test_bad_params_and_directions_are_user_errors():
    with pytest.raises(UserError, match="floating-point"):
        subgradient(lambda x: x.sum(), torch.tensor([1, 2]))
    with pytest.raises(UserError, match="same shape"):
        subgradient(lambda x: x.sum(), torch.zeros(3), direction=torch.zeros(2))
    with pytest.raises(UserError, match="keys"):
        subgradient(lambda p: p["a"].sum(), {"a": torch.zeros(2)}, direction={"b": torch.zeros(2)})
    with pytest.raises(UserError, match="scalar"):
        subgradient(lambda x: x * 2, torch.zeros(3))
    with pytest.raises(UserError, match="tensor or a dict"):
        subgradient(lambda x: x, [1.0])
    with pytest.raises(UserError, match="Generator"):
        exact_kinks(generator=0)
