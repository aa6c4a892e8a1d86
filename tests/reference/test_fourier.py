import numpy as np
import pytest

from dltheory.errors import SolverError
from dltheory.reference import fourier_l1, fourier_max_margin, max_margin


def _dual_value(Z: np.ndarray) -> float:
    """max Σα s.t. |DFT(Zᵀα)_k| ≤ d for all k, α ≥ 0: the dual, solved on its own."""
    import cvxpy as cp

    n, d = Z.shape
    angle = 2 * np.pi * np.outer(np.arange(d), np.arange(d)) / d
    alpha = cp.Variable(n, nonneg=True)
    v = Z.T @ alpha
    modulus = cp.norm(cp.vstack([np.cos(angle) @ v, np.sin(angle) @ v]), 2, axis=0)
    problem = cp.Problem(cp.Maximize(cp.sum(alpha)), [modulus <= d])
    problem.solve(solver=cp.CLARABEL)
    return float(problem.value)


def test_fourier_max_margin_equals_the_independently_solved_dual():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((8, 12)), np.sign(rng.standard_normal(8))
    sol = fourier_max_margin(X, y)
    assert sol.kkt_residual < 1e-6
    assert np.all(y * (X @ sol.w) >= 1 - 1e-7)
    assert fourier_l1(sol.w) == pytest.approx(_dual_value(y[:, None] * X), rel=1e-6)
    # The ℓ2 SVM (also margin ≥ 1) is feasible, so it cannot have a smaller Fourier-ℓ1 norm.
    assert fourier_l1(sol.w) < fourier_l1(max_margin(X, y, norm=2).w)
    spectrum = np.abs(np.fft.fft(sol.w))
    assert (spectrum < 1e-6 * spectrum.max()).sum() > 0


def test_fourier_max_margin_refuses_inseparable_data():
    X = np.array([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    with pytest.raises(SolverError):
        fourier_max_margin(X, np.array([1.0, -1.0]))
