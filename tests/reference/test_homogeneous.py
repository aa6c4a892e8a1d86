import numpy as np
import pytest
import torch

from dltheory.data import separable_gaussian
from dltheory.errors import ShapeError, SolverError
from dltheory.reference import homogeneous_kkt_residual, max_margin


def _linear(w, X):
    return X @ w


def _data(seed=0):
    return separable_gaussian(30, 5, generator=torch.Generator().manual_seed(seed))[:2]


def test_linear_model_kkt_point_is_the_l2_svm():
    X, y = _data()
    svm = max_margin(X, y)
    at_svm = homogeneous_kkt_residual(_linear, torch.tensor(svm.w), X, y, degree=1)
    assert at_svm.residual < 1e-7
    assert at_svm.normalized_margin == pytest.approx(svm.margin, rel=1e-9)
    # the multipliers are the SVM's: λ_i = α_i ‖ŵ‖ in max_margin's normalization
    np.testing.assert_allclose(at_svm.multipliers, svm.alpha / svm.margin, atol=1e-6)
    tilted = torch.tensor(svm.w) + 0.05 * torch.tensor([1.0, -1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    assert homogeneous_kkt_residual(_linear, tilted, X, y, degree=1).residual > 1e-3


def test_two_layer_linear_net_at_the_balanced_svm_factorization_is_kkt():
    # f = a⟨v, x⟩ is 2-homogeneous; at a = ‖ŵ‖^{1/2}, v = ŵ/‖ŵ‖^{1/2} it is a KKT point of (P)
    X, y = _data(1)
    w = torch.tensor(max_margin(X, y).w)
    params = {"a": w.norm().sqrt()[None], "v": w / w.norm().sqrt()}
    net = lambda p, X: p["a"][0] * (X @ p["v"])
    assert homogeneous_kkt_residual(net, params, X, y, degree=2).residual < 1e-7
    unbalanced = {"a": 2 * params["a"], "v": params["v"] / 2}  # same function, not stationary
    assert homogeneous_kkt_residual(net, unbalanced, X, y, degree=2).stationarity > 0.1


def test_non_separating_or_non_homogeneous_candidates_are_clear_errors():
    X, y = _data()
    with pytest.raises(SolverError, match="does not separate"):
        homogeneous_kkt_residual(_linear, -torch.tensor(max_margin(X, y).w), X, y, degree=1)
    with pytest.raises(ShapeError, match="not positively homogeneous of degree 2"):
        homogeneous_kkt_residual(_linear, torch.ones(5), X, y, degree=2)
    with pytest.raises(ShapeError, match="degree must be"):
        homogeneous_kkt_residual(_linear, torch.ones(5), X, y, degree=0)


def _full_program(f, params, X, y, degree):
    """The residual's SOCP posed directly in the P parameters, with constants (no reduction)."""
    import cvxpy as cp

    theta = torch.cat([p.reshape(-1) for p in params.values()]).double()
    sizes = [p.numel() for p in params.values()]

    def margins(v):
        pieces = zip(torch.split(v, sizes), params.values())
        return y * f(dict(zip(params, (t.reshape(p.shape) for t, p in pieces))), X)

    q = margins(theta).detach()
    theta_t = theta / float(q.min()) ** (1 / degree)
    G = torch.autograd.functional.jacobian(margins, theta_t).numpy()
    th, q_t = theta_t.numpy(), (q / q.min()).numpy()
    lam = cp.Variable(len(q_t), nonneg=True)
    problem = cp.Problem(cp.Minimize(cp.norm(th - G.T @ lam) / np.linalg.norm(th)
                                     + degree * ((q_t - 1) @ lam) / (th @ th)))
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    return problem.value


@pytest.mark.parametrize("width", [3, 40])  # P = 5·width + width: below and above n = 30
def test_reduced_program_matches_the_socp_in_parameter_space(width):
    X, y = _data(2)
    gen = torch.Generator().manual_seed(3)
    params = {"W": torch.randn(width, 5, generator=gen, dtype=torch.float64),
              "a": torch.randn(width, generator=gen, dtype=torch.float64)}
    net = lambda p, X: torch.relu(X.double() @ p["W"].T) @ p["a"]
    out = net(params, X)
    keep = out != 0  # points where every unit is off have no label the net separates
    X, y = X[keep], torch.sign(out[keep])  # labels the net separates: a feasible candidate
    got = homogeneous_kkt_residual(net, params, X, y, degree=2)
    expected = _full_program(net, params, X, y, 2)
    assert 0 < got.residual < 1
    assert got.residual == pytest.approx(expected, abs=1e-8)
