"""Hard-margin SVMs in ℓp norms, by cvxpy, with their optimality certified.

For separable data ``(x_i, y_i)`` the ℓp max-margin direction solves

    min ‖w‖_p   s.t.   y_i ⟨w, x_i⟩ ≥ 1   for all i,                    (P)

whose Lagrange dual is  max Σ α_i  s.t.  ‖Σ α_i y_i x_i‖_q ≤ 1, α ≥ 0  (1/p + 1/q = 1). The
solution's margin is 1/‖w‖_p. We solve (P) by Clarabel directly on its conic form (an LP,
the QP, or power cones: cvxpy's handling of the data cost 2–4× Clarabel's solve on these
small problems, and the implicit-bias sweeps solve one per seed and norm; the tests check
the answers against the same problem posed in cvxpy), read the multipliers α from the
solver, and *check* optimality ourselves — primal feasibility, dual feasibility, the duality gap
‖w‖_p − Σα and complementary slackness — rather than trusting the solver's status.

References
----------
Gunasekar, Lee, Soudry, Srebro, "Characterizing implicit bias in terms of optimization
geometry", ICML 2018 (the ℓp max-margin problems steepest descent converges to).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dltheory.errors import ShapeError, SolverError
from dltheory.reference._solve import solve_conic


@dataclass(frozen=True)
class MaxMarginSolution:
    """The ℓp max-margin separator and its optimality certificate.

    Attributes
    ----------
    w : the minimum-norm separator with functional margin 1 (``y_i <w, x_i> >= 1``).
    direction : ``w / ‖w‖_p``.
    margin : the geometric ℓp margin ``1 / ‖w‖_p``.
    alpha : the dual multipliers (support vectors have ``alpha > 0``).
    support : indices of the support vectors (active constraints).
    gap : relative duality gap ``(‖w‖_p − Σα) / ‖w‖_p``.
    kkt_residual : the largest relative violation of the KKT conditions.
    """

    w: np.ndarray
    direction: np.ndarray
    margin: float
    alpha: np.ndarray
    support: np.ndarray
    gap: float
    kkt_residual: float
    norm: float


def _as_numpy(X, y) -> tuple[np.ndarray, np.ndarray]:
    X = X.detach().cpu().double().numpy() if isinstance(X, torch.Tensor) else np.asarray(X, float)
    y = y.detach().cpu().double().numpy() if isinstance(y, torch.Tensor) else np.asarray(y, float)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ShapeError(f"max_margin needs X of shape (n, d) and y of shape (n,), got "
                         f"{X.shape} and {y.shape}")
    if not (np.isfinite(X).all() and np.isfinite(y).all()):
        raise ShapeError("max_margin: X or y contains NaN or inf")
    if not np.all(np.abs(y) == 1):
        raise ShapeError("max_margin: labels y must be ±1")
    return X, y


_INSEPARABLE = "the data are not linearly separable (through the origin)"


def _solve_direct(Z: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray]:
    """(w, the multipliers of Zw ≥ 1), by Clarabel on (P)'s conic form; the margin rows last.

    p = 2: the QP min ½‖w‖² (its multipliers are ‖w‖ times those of (P)).
    p = 1: the LP min 𝟙ᵀt s.t. −t ≤ w ≤ t.
    p = ∞: the LP min t s.t. −t𝟙 ≤ w ≤ t𝟙. Other p: min t s.t. Σ r_i = t and
    (r_i, t, w_i) in the power cone r^{1/p} t^{1−1/p} ≥ |w| — cvxpy's form of a p-norm. The
    constraint matrix is assembled from (row, column, value) triplets: scipy's block stacking
    took 1.2 ms of a 1.8 ms ℓ1 solve.
    """
    import clarabel
    import scipy.sparse as sp

    n, d = Z.shape
    i, ones = np.arange(d), np.ones(d)
    zr, zc = np.indices((n, d)).reshape(2, -1)
    if p == 2:
        P, q, A, head = sp.identity(d, format="csc"), np.zeros(d), sp.csc_matrix(-Z), []
        rows = 0
    elif p in (1, np.inf):
        k = d if p == 1 else 1  # bound variables t: one per coordinate (ℓ1), or one (ℓ∞)
        t = d + (i if p == 1 else np.zeros(d, dtype=int))  # the column of w_i's bound
        rows, head = 2 * d, [clarabel.NonnegativeConeT(2 * d)]
        A = sp.csc_matrix((np.concatenate([ones, -ones, -ones, -ones, -Z.ravel()]),
                           (np.concatenate([i, i, d + i, d + i, rows + zr]),
                            np.concatenate([i, t, i, t, zc]))), shape=(rows + n, d + k))
        P, q = None, np.concatenate([np.zeros(d), np.ones(k)])
    else:  # x = (w, r, t); row 0: Σr − t = 0; rows 1 + 3i…: (r_i, t, w_i) in the power cone
        rows, t = 1 + 3 * d, 2 * d
        head = [clarabel.ZeroConeT(1)] + [clarabel.PowerConeT(1 / p)] * d
        A = sp.csc_matrix((np.concatenate([ones, [-1.0], -ones, -ones, -ones, -Z.ravel()]),
                           (np.concatenate([np.zeros(d, dtype=int), [0], 1 + 3 * i, 2 + 3 * i,
                                            3 + 3 * i, rows + zr]),
                            np.concatenate([d + i, [t], d + i, np.full(d, t), i, zc]))),
                          shape=(rows + n, 2 * d + 1))
        P, q = None, np.concatenate([np.zeros(2 * d), [1.0]])
    b = np.concatenate([np.zeros(rows), -np.ones(n)])
    solution = solve_conic(P, q, A, b, [*head, clarabel.NonnegativeConeT(n)], "max_margin",
                           infeasible=_INSEPARABLE)
    return np.asarray(solution.x[:d], dtype=float), np.asarray(solution.z[rows:], dtype=float)


def max_margin(X, y, norm: float = 2.0, *, tol: float = 1e-6) -> MaxMarginSolution:
    """The hard-margin SVM direction in the ℓ``norm`` norm (no bias term).

    Parameters
    ----------
    X : (n, d) data, y : (n,) labels in {−1, +1}.
    norm : p in [1, ∞] (``float('inf')`` for ℓ∞).
    tol : the largest relative KKT residual accepted; above it a :class:`SolverError`.

    Raises
    ------
    SolverError : the data are not linearly separable, or the solver's answer fails the
        optimality check.

    Examples
    --------
    >>> X = np.array([[1.0, 0.0], [-1.0, 0.0], [2.0, 1.0]]); y = np.array([1.0, -1.0, 1.0])
    >>> sol = max_margin(X, y)
    >>> np.round(sol.w, 6).tolist(), round(sol.margin, 6)
    ([1.0, 0.0], 1.0)
    """

    X, y = _as_numpy(X, y)
    p = float(norm)
    if not p >= 1:
        raise ShapeError(f"max_margin: norm must be >= 1 (got {norm})")
    q = np.inf if p == 1 else (1.0 if np.isinf(p) else p / (p - 1))
    n, d = X.shape
    Z = y[:, None] * X
    w_val, alpha = _solve_direct(Z, p)
    w_norm = float(np.linalg.norm(w_val, ord=p))
    alpha = np.maximum(alpha, 0.0)
    if p == 2:
        alpha = alpha / w_norm
    margins = Z @ w_val
    dual_norm = float(np.linalg.norm(Z.T @ alpha, ord=q))
    residual = max(
        float(np.max(1.0 - margins, initial=0.0)),  # primal feasibility
        max(dual_norm - 1.0, 0.0),  # dual feasibility
        abs(w_norm - alpha.sum()) / w_norm,  # duality gap
        float(np.max(alpha * np.abs(margins - 1.0))) / max(alpha.sum(), 1e-300),  # compl. slackness
    )
    if residual > tol:
        raise SolverError(f"max_margin: the solution fails the KKT check (residual {residual:.2e} "
                          f"> {tol:.0e}); the data may be nearly inseparable")
    support = np.flatnonzero(margins <= 1.0 + 1e-5)
    return MaxMarginSolution(
        w=w_val, direction=w_val / w_norm, margin=1.0 / w_norm, alpha=alpha, support=support,
        gap=(w_norm - alpha.sum()) / w_norm, kkt_residual=residual, norm=p,
    )
