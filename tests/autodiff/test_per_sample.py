"""``batch_dim=0``: tangents on the tied samples alone, the same subgradient as the whole
batch's, and PyTorch's gradient bit for bit for the samples that hold no tie."""

from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F

from dltheory.autodiff import exact_kinks, subgradient
from dltheory.errors import UserError
from tests.autodiff._same_pieces import assert_same_pieces_and_limit

F64 = torch.float64


def _mlp(inplace=False):
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(inplace), torch.nn.Linear(8, 8),
                               torch.nn.ReLU(inplace), torch.nn.Linear(8, 3))


def _cnn(inplace=False):
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(inplace), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.ReLU(inplace), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(4 * 2 * 2, 3))


def _integer_problem(kind, seed, inplace=False):
    """Weights and inputs in {-1, 0, 1}, float64: exact ties in relus and pooling windows,
    in some samples and not others."""
    gen = torch.Generator().manual_seed(seed)
    net = (_mlp if kind == "mlp" else _cnn)(inplace).double()
    params = {k: torch.randint(-1, 2, p.shape, generator=gen).to(F64) for k, p in net.named_parameters()}
    shape = (12, 6) if kind == "mlp" else (12, 1, 8, 8)
    X = torch.randint(-1, 2, shape, generator=gen).to(F64)
    y = torch.randint(0, 3, (12,), generator=gen)
    v = {k: torch.randn(p.shape, generator=gen, dtype=F64) for k, p in params.items()}

    def loss(p):
        return F.cross_entropy(torch.func.functional_call(net, p, (X,)), y)
    return loss, params, v


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("seed", range(4))
def test_per_sample_tangents_give_the_whole_batch_subgradient(kind, seed):
    loss, params, v = _integer_problem(kind, seed)
    got, report = subgradient(loss, params, direction=v, batch_dim=0, return_report=True)
    whole, whole_report = subgradient(loss, params, direction=v, return_report=True)
    assert not any(report.whole_batch.values())  # all on the tied rows
    assert_same_pieces_and_limit(loss, params, v, got, report, whole, whole_report)


@pytest.mark.parametrize("make, shape", [(_mlp, (16, 6)), (_cnn, (16, 1, 8, 8))])
def test_samples_without_a_tie_get_pytorchs_gradient_bit_for_bit(make, shape):
    gen = torch.Generator().manual_seed(0)
    net = make(inplace=True)
    X = torch.randn(shape, generator=gen)
    X[0] = 0  # with zero biases, sample 0 ties in every relu (and pooling window)
    for m in net:
        if hasattr(m, "bias"):
            torch.nn.init.zeros_(m.bias)
    y = torch.randint(0, 3, (shape[0],), generator=gen)

    def input_grad(mode):
        x = X.clone().requires_grad_(True)
        with mode:
            F.cross_entropy(net(x), y, reduction="sum").backward()
        return x.grad

    mode = exact_kinks(generator=torch.Generator().manual_seed(1), batch_dim=0)
    ours, plain = input_grad(mode), input_grad(nullcontext())
    assert mode.report.ties["relu"] > 0 and not any(mode.report.whole_batch.values())
    assert torch.equal(ours[1:], plain[1:])
    assert not torch.equal(ours[0], plain[0])  # the tied sample: the directional rule


@pytest.mark.parametrize("mixing", [
    lambda h: h - h.mean(0),  # a reduction over the batch: the rows meet (seen from the shapes)
    lambda h: h.flip(0),  # rows swapped: the replay of the tied rows is not what the batch computed
])
@pytest.mark.parametrize("width", [3, 4])  # 4: the mean over the batch looks like a batch
def test_rows_that_meet_get_the_whole_batch_tangent(mixing, width):
    gen = torch.Generator().manual_seed(0)
    W = torch.randint(1, 3, (5, width), generator=gen).to(F64)
    # h = X @ W: rows 0, 2W, W, W; h - mean ties in rows 2 and 3, flip(h) in row 3 alone
    X = torch.tensor([0.0, 2.0, 1.0, 1.0], dtype=F64)[:, None].expand(4, 5)

    def loss(w):
        return torch.relu(mixing(X @ w)).sum()
    v = torch.randn(5, width, generator=gen, dtype=F64)
    got, report = subgradient(loss, W, direction=v, batch_dim=0, return_report=True)
    assert report.ties["relu"] > 0 and report.whole_batch["relu"] > 0
    assert torch.equal(got, subgradient(loss, W, direction=v))


def test_batch_norm_in_training_mode_is_refused_under_batch_dim():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU())
    X = torch.randn(5, 3)
    with pytest.raises(UserError, match="batch_norm in training mode"):
        with exact_kinks(batch_dim=0):
            net(X)
    net.eval()  # running statistics: each sample on its own
    with exact_kinks(batch_dim=0):
        net(X).sum().backward()


def test_batch_dim_other_than_zero_is_a_user_error():
    with pytest.raises(UserError, match="batch_dim"):
        exact_kinks(batch_dim=1)
    with pytest.raises(UserError, match="batch_dim"):
        subgradient(lambda x: x.sum(), torch.zeros(2), batch_dim=True)
