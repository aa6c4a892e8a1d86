import math

import numpy as np
import pytest

from dltheory.errors import ShapeError
from dltheory.reference import relu_dictionary, relu_lasso, relu_max_margin
from dltheory.reference.relu_measure import _dual_sup


def _circle(n, seed):
    theta = np.random.default_rng(seed).uniform(0, 2 * np.pi, n)
    return np.stack([np.cos(theta), np.sin(theta)], 1)


def test_exact_dual_sup_matches_a_very_fine_grid():
    X = _circle(15, 0) * np.random.default_rng(1).uniform(0.5, 2, (15, 1))
    v = np.random.default_rng(2).standard_normal(15)
    Phi, _ = relu_dictionary(X, 100_000)
    brute = np.abs(Phi.T @ v).max()
    assert brute <= _dual_sup(X, v) + 1e-12
    assert _dual_sup(X, v) == pytest.approx(brute, rel=1e-5)  # a kink max: grid error O(h)


def test_lasso_sandwich_holds_and_tightens_with_the_grid():
    X = _circle(20, 3)
    y = np.cos(3 * np.arctan2(X[:, 1], X[:, 0]))
    coarse, fine = relu_lasso(X, y, 0.01, 90), relu_lasso(X, y, 0.01, 720)
    for sol in (coarse, fine):
        assert sol.lower_bound <= sol.objective and sol.kkt_residual < 1e-6
    # both grids bound the same continuum optimum from above, both duals from below
    assert max(coarse.lower_bound, fine.lower_bound) <= min(coarse.objective, fine.objective)
    assert fine.relative_gap < coarse.relative_gap and fine.relative_gap < 1e-3


def test_every_network_costs_at_least_the_lower_bound_and_balancing_helps():
    X, lam = _circle(20, 4), 0.01
    y = np.maximum(X[:, 0], 0) - np.maximum(X[:, 1], 0)
    ref = relu_lasso(X, y, lam, 360)
    rng = np.random.default_rng(5)
    for _ in range(20):
        a, W = rng.standard_normal(6), rng.standard_normal((6, 2))
        fit = lambda a, W: ((np.maximum(X @ W.T, 0) @ a - y) ** 2).mean() / 2  # noqa: E731
        F = fit(a, W) + lam / 2 * (a @ a + (W * W).sum())
        s = np.sqrt(np.linalg.norm(W, axis=1) / np.abs(a))  # rebalance: |a s| = ‖w / s‖
        F_bal = fit(a * s, W / s[:, None]) + lam * (np.abs(a) * np.linalg.norm(W, axis=1)).sum()
        assert ref.lower_bound <= F_bal <= F + 1e-12


def test_max_margin_of_antipodal_pair_is_one_quarter_and_bounds_networks():
    sol = relu_max_margin(np.array([[1.0, 0.0], [-1.0, 0.0]]), np.array([1.0, -1.0]), 360)
    assert sol.margin == pytest.approx(0.25, abs=1e-8) and sol.upper_bound == pytest.approx(0.25)
    X = _circle(16, 6)
    y = np.where(np.sin(2 * np.arctan2(X[:, 1], X[:, 0])) >= 0, 1.0, -1.0)
    sol = relu_max_margin(X, y, 720)
    assert sol.margin <= sol.upper_bound and sol.relative_gap < 1e-3
    rng = np.random.default_rng(7)
    for _ in range(200):  # no random network beats the certified upper bound
        a, W = rng.standard_normal(8), rng.standard_normal((8, 2))
        gamma = (y * (np.maximum(X @ W.T, 0) @ a)).min() / (a @ a + (W * W).sum())
        assert gamma <= sol.upper_bound


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ShapeError, match="planar inputs"):
        relu_lasso(np.ones((4, 3)), np.ones(4), 0.1)
    with pytest.raises(ShapeError, match="lam must be > 0"):
        relu_lasso(_circle(4, 0), np.ones(4), 0.0)
    with pytest.raises(ShapeError, match="shape"):
        relu_max_margin(_circle(4, 0), np.ones(3))
    assert math.isfinite(relu_lasso(_circle(4, 0), np.ones(4), 0.1, 36).objective)


def test_lasso_gives_the_same_bits_first_and_after_other_solves():
    # A seed's reference must not depend on what its batch-mates solved before it. (The
    # lasso is built fresh per call: a DPP problem cached per shape, tried, saved no time
    # and at the full profile's n = 100, k = 5760 had cvxpy densify a 24.7 GiB array.)
    X, X2 = _circle(12, 5), _circle(12, 6)
    y, y2 = np.maximum(X[:, 0], 0.0), np.maximum(X2[:, 1], 0.0)
    first = relu_lasso(X, y, 1e-2, 180)
    relu_lasso(X2, y2, 1e-2, 180)
    again = relu_lasso(X, y, 1e-2, 180)
    assert np.array_equal(first.coef, again.coef) and first.lower_bound == again.lower_bound


def test_hand_built_lasso_matches_the_lasso_posed_in_cvxpy(monkeypatch):
    # _lasso solves the QP on a working set it grows until no column violates |Φ_jᵀr|/n ≤ λ
    import cvxpy as cp

    import dltheory.reference.relu_measure as relu_measure
    from dltheory.reference.relu_measure import _lasso

    sizes = []
    qp = relu_measure._lasso_qp
    monkeypatch.setattr(relu_measure, "_lasso_qp", lambda P, *a: sizes.append(P.shape[1]) or qp(P, *a))

    X = _circle(12, 3)
    y = np.random.default_rng(4).standard_normal(12)
    Phi, _ = relu_dictionary(X, 180)
    for lam in (1e-3, 1e-1):
        c = cp.Variable(180)
        objective = lambda v, lam=lam: cp.sum_squares(Phi @ v - y) / (2 * len(y)) + lam * cp.norm1(v)
        problem = cp.Problem(cp.Minimize(objective(c)))
        problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
        sizes.clear()
        ours = _lasso(Phi, y, lam)
        assert objective(ours).value == pytest.approx(problem.value, rel=1e-9)
        assert len(sizes) >= 2 and sizes[-1] < 180  # the set grew, and stayed below the grid


def test_lasso_working_set_grows_even_when_no_violating_peak_is_new(monkeypatch):
    # the fallback: should the peaks add nothing (a solver less accurate than the slack),
    # every violator joins, so the loop cannot spin
    import dltheory.reference.relu_measure as relu_measure

    X = _circle(12, 3)
    y = np.random.default_rng(4).standard_normal(12)
    Phi, _ = relu_dictionary(X, 180)
    expected = relu_measure._lasso(Phi, y, 1e-2)
    first = relu_measure._peaks(np.abs(Phi.T @ y), np.ones(180, dtype=bool))
    monkeypatch.setattr(relu_measure, "_peaks", lambda corr, candidates: first)
    calls, qp = [], relu_measure._lasso_qp

    def counted(*args):
        calls.append(1)
        assert len(calls) < 50, "the working set stopped growing"
        return qp(*args)

    monkeypatch.setattr(relu_measure, "_lasso_qp", counted)
    got = relu_measure._lasso(Phi, y, 1e-2)
    objective = lambda c: np.sum((Phi @ c - y) ** 2) / 24 + 1e-2 * np.abs(c).sum()
    assert objective(got) == pytest.approx(objective(expected), rel=1e-9)
