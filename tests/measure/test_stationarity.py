import cvxpy as cp
import numpy as np
import pytest
import torch

from dltheory import UserError
from dltheory.measure import goldstein_gap, goldstein_gaps, min_norm_in_hull


def test_goldstein_gap_is_zero_at_a_kink_and_the_gradient_norm_away_from_one():
    loss = lambda x: x.abs().sum()  # noqa: E731 — the kink set is x = 0
    gen = torch.Generator().manual_seed(0)
    at_kink = goldstein_gap(loss, torch.zeros(2, dtype=torch.float64), 0.1, 64, gen)
    away = goldstein_gap(loss, torch.tensor([1.0, -1.0], dtype=torch.float64), 0.1, 16, gen)
    assert at_kink < 1e-9
    assert away == pytest.approx(np.sqrt(2), rel=1e-6)


def test_too_few_samples_leave_a_floor_at_a_sharp_minimum():
    # f(x) = ‖x‖₁ in dimension 12 at its minimum: K = D sampled sign vectors rarely
    # surround 0; the default 6D does
    loss = lambda x: x.abs().sum()  # noqa: E731
    x = torch.zeros(12, dtype=torch.float64)
    few = goldstein_gap(loss, x, 0.1, 12, torch.Generator().manual_seed(0))
    assert few > 0.1 and goldstein_gap(loss, x, 0.1) < 1e-9


def test_goldstein_gaps_batched_equal_goldstein_gap_one_by_one():
    # f_s(x) = ‖x − c_s‖₁ for three centres: the batched gradient sign(y − c_s) at the same
    # draws gives each point the gap goldstein_gap gives it with that generator
    c = torch.tensor([[0.0, 0.0, 0.0], [0.5, -0.5, 0.0], [3.0, 1.0, 2.0]], dtype=torch.float64)
    X = torch.tensor([[0.0, 0.0, 0.0], [0.52, -0.5, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    batched = goldstein_gaps(lambda Y: torch.sign(Y - c[:, None, :]), X, 0.1, 30,
                             [torch.Generator().manual_seed(s) for s in range(3)])
    alone = [goldstein_gap(lambda x, s=s: (x - c[s]).abs().sum(), X[s], 0.1, 30,
                           torch.Generator().manual_seed(s)) for s in range(3)]
    assert batched == pytest.approx(alone, abs=1e-12)
    assert batched[0] < 1e-9 and batched[2] == pytest.approx(3 ** 0.5, rel=1e-9)


@pytest.mark.parametrize("shift", [0.0, 0.7])
def test_min_norm_in_hull_matches_cvxpy(shift):
    rng = np.random.default_rng(0)
    G = rng.standard_normal((10, 40)) + shift  # shift 0: 0 inside the hull; 0.7: outside
    lam = cp.Variable(40, nonneg=True)
    reference = cp.Problem(cp.Minimize(cp.norm(G @ lam)), [cp.sum(lam) == 1]).solve(solver=cp.CLARABEL)
    assert min_norm_in_hull(G) == pytest.approx(reference, abs=1e-6)


@pytest.mark.parametrize("call", [
    lambda: min_norm_in_hull(np.zeros((3, 0))),
    lambda: min_norm_in_hull(np.array([[np.nan]])),
    lambda: goldstein_gap(torch.sum, torch.zeros(2, 2), 0.1),
    lambda: goldstein_gap(torch.sum, torch.zeros(2), 0.0),
    lambda: goldstein_gap(torch.sum, torch.zeros(2), 0.1, samples=0),
    lambda: goldstein_gaps(torch.sign, torch.zeros(2), 0.1, 4, [torch.Generator()]),
    lambda: goldstein_gaps(torch.sign, torch.zeros(1, 2), 0.1, 4, []),
    lambda: goldstein_gaps(lambda Y: Y[..., :1], torch.zeros(1, 2), 0.1, 4, [torch.Generator()]),
])
def test_bad_inputs_raise_a_user_error(call):
    with pytest.raises(UserError):
        call()
