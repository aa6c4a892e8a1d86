"""The max-margin separator in the ℓ1 norm of the DFT, by cvxpy, with its optimality certified.

Gradient descent on a two-layer linear convolutional network with full-width circular
filters converges in direction to the solution of

    min ‖β̂‖_1 = Σ_k |β̂_k|   s.t.   y_i ⟨β, x_i⟩ ≥ 1,     β̂ = DFT(β), β real,          (P)

(Gunasekar, Lee, Soudry, Srebro 2018, Theorem 2 with L = 2: the ℓ_{2/L} quasi-norm is
then convex, so its stationary points are its minima). With β real, β̂_k = ⟨c_k, β⟩ −
i⟨s_k, β⟩ for the cosine and sine rows c_k, s_k, so (P) is a second-order cone program in
β ∈ R^d. Its dual is  max Σ α_i  s.t.  ‖DFT(Σ α_i y_i x_i)‖_∞ ≤ d, α ≥ 0: by Parseval
⟨v, β⟩ = (1/d) Re Σ_k v̂_k conj(β̂_k), so the dual norm of ‖DFT(·)‖_1 is ‖DFT(·)‖_∞ / d.
As in :func:`dltheory.reference.max_margin`, primal and dual feasibility, the duality gap and
complementary slackness are checked here rather than trusting the solver's status.

References
----------
S. Gunasekar, J. D. Lee, D. Soudry, N. Srebro, "Implicit bias of gradient descent on linear
convolutional networks", NeurIPS 2018.
"""

from __future__ import annotations

import numpy as np

from dltheory.errors import SolverError
from dltheory.reference._solve import solve
from dltheory.reference.svm import MaxMarginSolution, _as_numpy


def fourier_l1(w) -> float:
    """``‖DFT(w)‖_1`` (unnormalized DFT, as :func:`dltheory.measure.fourier_norm`)."""
    return float(np.abs(np.fft.fft(np.asarray(w, dtype=float))).sum())


def fourier_max_margin(X, y, *, tol: float = 1e-6) -> MaxMarginSolution:
    """The hard-margin separator of least ``‖DFT(β)‖_1`` (no bias term), β real.

    Parameters
    ----------
    X : (n, d) signals, y : (n,) labels in {−1, +1}.
    tol : the largest relative KKT residual accepted.

    Returns
    -------
    :class:`dltheory.reference.MaxMarginSolution` with ``norm = "fourier-l1"``: ``w`` = β,
    ``margin = 1/‖β̂‖_1``, ``direction = β/‖β̂‖_1``.

    Raises
    ------
    SolverError : the data are not separable through the origin, or the answer fails the
        optimality check.

    Examples
    --------
    >>> X = np.array([[1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0]]); y = np.array([1.0, -1.0])
    >>> sol = fourier_max_margin(X, y)  # a constant filter: all its DFT mass at frequency 0
    >>> np.round(sol.w, 6).tolist(), round(sol.margin, 6)
    ([0.25, 0.25, 0.25, 0.25], 1.0)
    """
    import cvxpy as cp

    X, y = _as_numpy(X, y)
    n, d = X.shape
    Z = y[:, None] * X
    angle = 2 * np.pi * np.outer(np.arange(d), np.arange(d)) / d
    cos, sin = np.cos(angle), np.sin(angle)
    beta = cp.Variable(d)
    constraint = Z @ beta >= 1
    modulus = cp.norm(cp.vstack([cos @ beta, sin @ beta]), 2, axis=0)  # |β̂_k|, k = 0..d−1
    problem = cp.Problem(cp.Minimize(cp.sum(modulus)), [constraint])
    solve(problem, "fourier_max_margin", beta,
          infeasible="the data are not linearly separable (through 0)")
    b = np.asarray(beta.value, dtype=float)
    norm = fourier_l1(b)
    alpha = np.maximum(np.asarray(constraint.dual_value, dtype=float), 0.0)
    margins = Z @ b
    dual_norm = float(np.abs(np.fft.fft(Z.T @ alpha)).max()) / d
    residual = max(
        float(np.max(1.0 - margins, initial=0.0)),
        max(dual_norm - 1.0, 0.0),
        abs(norm - alpha.sum()) / norm,
        float(np.max(alpha * np.abs(margins - 1.0))) / max(alpha.sum(), 1e-300),
    )
    if residual > tol:
        raise SolverError(f"fourier_max_margin: the solution fails the KKT check (residual "
                          f"{residual:.2e} > {tol:.0e})")
    return MaxMarginSolution(
        w=b, direction=b / norm, margin=1.0 / norm, alpha=alpha,
        support=np.flatnonzero(margins <= 1.0 + 1e-5), gap=(norm - alpha.sum()) / norm,
        kkt_residual=residual, norm="fourier-l1",
    )
