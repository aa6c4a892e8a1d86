import numpy as np
import pytest
import torch

from dltheory.data import separable_gaussian
from dltheory.errors import ShapeError, SolverError
from dltheory.reference import max_margin


def test_two_symmetric_points_have_the_closed_form_svm():
    # x = ±(3, 4): the max-margin w is x/‖x‖² (margin ‖x‖ = 5), in every norm's geometry
    X = np.array([[3.0, 4.0], [-3.0, -4.0]])
    y = np.array([1.0, -1.0])
    sol = max_margin(X, y)
    np.testing.assert_allclose(sol.w, [3 / 25, 4 / 25], atol=1e-8)
    assert sol.margin == pytest.approx(5.0)
    assert sorted(sol.support.tolist()) == [0, 1]


def test_l1_and_linf_svms_match_hand_solutions():
    X = np.array([[2.0, 1.0], [-2.0, -1.0]])
    y = np.array([1.0, -1.0])
    # min ‖w‖_1 s.t. 2 w1 + w2 >= 1: all weight on the largest coordinate, w = (1/2, 0)
    np.testing.assert_allclose(max_margin(X, y, norm=1).w, [0.5, 0.0], atol=1e-7)
    # min ‖w‖_∞ s.t. 2 w1 + w2 >= 1: w = (1/3, 1/3)
    np.testing.assert_allclose(max_margin(X, y, norm=float("inf")).w, [1 / 3, 1 / 3], atol=1e-7)


def test_l2_svm_satisfies_kkt_on_random_separable_data():
    g = torch.Generator().manual_seed(3)
    X, y, w_star = separable_gaussian(60, 8, generator=g)
    sol = max_margin(X, y)
    Xn, yn = X.numpy(), y.numpy()
    # stationarity: w = Σ α_i y_i x_i ‖w‖ (multipliers of min ‖w‖), checked independently
    np.testing.assert_allclose(sol.w, (sol.alpha * yn) @ Xn * np.linalg.norm(sol.w), atol=1e-6)
    assert (yn * (Xn @ sol.w)).min() == pytest.approx(1.0, abs=1e-7)
    # no unit vector separates with a larger margin than the SVM: the planted one doesn't
    assert (yn * (Xn @ w_star.numpy())).min() <= sol.margin + 1e-9


def test_inseparable_data_and_bad_shapes_are_clear_errors():
    with pytest.raises(SolverError, match="not linearly separable"):
        max_margin(np.array([[1.0], [1.0]]), np.array([1.0, -1.0]))
    with pytest.raises(ShapeError, match="labels y must be ±1"):
        max_margin(np.eye(2), np.array([1.0, 0.0]))
    with pytest.raises(ShapeError, match="NaN"):
        max_margin(np.array([[np.nan, 0.0], [1.0, 1.0]]), np.array([1.0, -1.0]))


@pytest.mark.parametrize("norm", [2.0, 1.0, float("inf"), 3.0])
def test_same_data_give_the_same_bits_first_and_after_other_solves(norm):
    # every solve builds its own Clarabel solver, so the answer depends on the data alone,
    # not on which solve came first (a seed's reference is the same batched and alone)
    def data(seed):
        X, y, _ = separable_gaussian(20, 5, margin=0.5, generator=torch.Generator().manual_seed(seed))
        return X.double().numpy(), y.double().numpy()

    first = max_margin(*data(0), norm)
    max_margin(*data(1), norm)
    again = max_margin(*data(0), norm)
    assert np.array_equal(first.w, again.w) and np.array_equal(first.alpha, again.alpha)


@pytest.mark.parametrize("norm", [2.0, 1.0, float("inf"), 1.5, 3.0])
def test_direct_conic_form_matches_cvxpy(norm):
    # max_margin hands Clarabel a conic form built by hand; (P) posed in cvxpy must give the
    # same optimum
    import cvxpy as cp

    from dltheory.reference._solve import solve

    for seed in range(3):
        X, y, _ = separable_gaussian(40, 12, margin=0.2, generator=torch.Generator().manual_seed(seed))
        X, y = X.double().numpy(), y.double().numpy()
        w = cp.Variable(X.shape[1])
        objective = 0.5 * cp.sum_squares(w) if norm == 2 else cp.norm(w, norm)
        problem = cp.Problem(cp.Minimize(objective), [(y[:, None] * X) @ w >= 1])
        solve(problem, "test", w)
        direct = max_margin(X, y, norm)
        assert direct.margin == pytest.approx(1 / np.linalg.norm(w.value, ord=norm), rel=1e-9)
        assert direct.kkt_residual < 1e-7
        # The ℓ1 and ℓ∞ LPs may have several optimal w. For 1 < p < ∞ the optimum is unique
        # but flat: both solvers' w agree to ~1e-6 where their margins agree to 1e-10.
        if norm == 2:
            np.testing.assert_allclose(direct.w, w.value, atol=1e-8)
        elif norm not in (1.0, float("inf")):
            np.testing.assert_allclose(direct.w, w.value, atol=1e-5)
