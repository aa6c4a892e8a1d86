"""Infinite-width two-layer ReLU networks on planar inputs, by Clarabel, with certificates.

A two-layer ReLU network f(x) = Σ_r a_r relu(w_rᵀx) is 2-homogeneous in each unit (a_r, w_r).
Rebalancing a unit to |a_r| = ‖w_r‖ leaves f unchanged and minimizes its ℓ2 cost, since
(a_r² + ‖w_r‖²)/2 ≥ |a_r|‖w_r‖ with equality when balanced. Writing c_r = a_r‖w_r‖ and
u_r = w_r/‖w_r‖, a network of any width is a signed measure μ = Σ_r c_r δ_{u_r} on the unit
sphere, f = ∫ relu(uᵀx) dμ(u), and

    min_{widths, a, W}  L(f) + (λ/2) Σ_r (a_r² + ‖w_r‖²)  =  min_μ  L(∫ relu(uᵀx) dμ) + λ‖μ‖_TV,

a *convex* problem in μ (Bach 2017, Section 2; Wei, Lee, Liu, Ma 2019, Section 4; the
mean-field scaling 1/m changes nothing: (1/m)Σ|a_r|‖w_r‖ is again ‖μ‖_TV). Likewise the
optimal normalized margin of the network, max_{‖Θ‖₂ ≤ 1} min_i y_i f(x_i; Θ), is half the ℓ1
max-margin over the dictionary {relu(uᵀx)}: γ* = 1/(2 min{‖μ‖_TV : y_i f_μ(x_i) ≥ 1}).

For inputs in R² the unit directions are angles φ, u(φ) = (cos φ, sin φ), so a uniform grid of
K angles turns each problem into a finite lasso / ℓ1 program. A grid measure is a network,
so the grid optimum bounds the infinite-width one from one side; the other side comes from
the dual: its constraint |Σ_i v_i relu(u(φ)ᵀx_i)| ≤ λ must hold for *every* φ; the sup over
φ is computed exactly (the function is a sinusoid between the 2n kinks), and v is scaled into
feasibility. The two bounds sandwich the infinite-width optimum.

References
----------
F. Bach, "Breaking the curse of dimensionality with convex neural networks", JMLR 2017.
C. Wei, J. D. Lee, Q. Liu, T. Ma, "Regularization matters: generalization and optimization of
neural nets v.s. their induced kernel", NeurIPS 2019, Theorems 4.1 and 4.3.
S. Rosset, J. Zhu, T. Hastie, "Boosting as a regularized path to a maximum margin
classifier", JMLR 2004.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dltheory.errors import ShapeError, SolverError
from dltheory.reference._solve import solve_conic
from dltheory.reference.svm import max_margin


def relu_dictionary(X, n_directions: int) -> tuple[np.ndarray, np.ndarray]:
    """The features relu(u(φ_k)ᵀx_i), shape (n, K), on K = ``n_directions`` uniform angles.

    Returns ``(Phi, angles)``; ``X`` has shape (n, 2).
    """
    X = _inputs(X)
    angles = 2 * math.pi * np.arange(n_directions) / n_directions
    U = np.stack([np.cos(angles), np.sin(angles)], 1)
    return np.maximum(X @ U.T, 0.0), angles


def _inputs(X) -> np.ndarray:
    X = X.detach().cpu().double().numpy() if isinstance(X, torch.Tensor) else np.asarray(X, float)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ShapeError(f"the ReLU-measure references need planar inputs X of shape (n, 2), got "
                         f"{X.shape}")
    if not np.isfinite(X).all():
        raise ShapeError("X contains NaN or inf")
    return X


def _targets(y, n: int) -> np.ndarray:
    y = y.detach().cpu().double().numpy() if isinstance(y, torch.Tensor) else np.asarray(y, float)
    if y.shape != (n,) or not np.isfinite(y).all():
        raise ShapeError(f"y must be a finite vector of shape ({n},), got shape {y.shape}")
    return y


def _dual_sup(X: np.ndarray, v: np.ndarray) -> float:
    """sup_φ |Σ_i v_i relu(u(φ)ᵀx_i)|, exactly.

    Between consecutive breakpoints φ = angle(x_i) ± π/2 the active set is fixed, so the
    function is u(φ)ᵀs with s = Σ_active v_i x_i; its largest |value| on the arc is ‖s‖ when
    the angle of ±s lies inside, else at an end.
    """
    theta = np.arctan2(X[:, 1], X[:, 0])
    cuts = np.sort(np.concatenate([(theta + np.pi / 2) % (2 * np.pi),
                                   (theta - np.pi / 2) % (2 * np.pi), [0.0, 2 * np.pi]]))
    best = 0.0
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        mid = (lo + hi) / 2
        active = X @ np.array([np.cos(mid), np.sin(mid)]) > 0
        s = v[active] @ X[active]
        for phi in (lo, hi):
            best = max(best, abs(np.cos(phi) * s[0] + np.sin(phi) * s[1]))
        for phi in (np.arctan2(s[1], s[0]), np.arctan2(-s[1], -s[0])):
            if lo <= phi % (2 * np.pi) <= hi:
                best = max(best, float(np.hypot(*s)))
    return best


@dataclass(frozen=True)
class ReluLassoSolution:
    """The grid optimum of min_μ (1/2n)‖f_μ(X) − y‖² + λ‖μ‖_TV and its certificate.

    Attributes
    ----------
    objective : the grid optimum, an upper bound on the infinite-width optimum.
    lower_bound : the dual value of a continuum-feasible dual point: a lower bound on it.
    coef, angles : the grid measure μ = Σ_k coef_k δ_{u(angles_k)}.
    kkt_residual : the grid lasso's certificate: max(relative dual infeasibility of r/n,
        relative duality gap).
    """

    objective: float
    lower_bound: float
    coef: np.ndarray
    angles: np.ndarray
    kkt_residual: float

    @property
    def relative_gap(self) -> float:
        """(objective − lower_bound) / objective: how far the grid can be from the continuum."""
        return (self.objective - self.lower_bound) / self.objective


def _lasso_qp(Phi: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """argmin_c (1/2n)‖Φc − y‖² + λ‖c‖₁, by Clarabel on the QP form in x = (c, t, r):
    min (1/2n)‖r‖² + λ𝟙ᵀt  s.t.  r = Φc − y,  −t ≤ c ≤ t  (what cvxpy builds; the tests
    compare the two)."""
    import clarabel
    import scipy.sparse as sp

    n, k = Phi.shape
    i, j = np.arange(k), np.arange(n)
    pr, pc = np.nonzero(Phi)  # a ReLU dictionary is half zeros: entries the solver need not see
    ones = np.ones(k)
    # rows 0..n−1: −Φc + r = −y (zero cone); then c − t ≤ 0 and −c − t ≤ 0 (nonnegative)
    A = sp.csc_matrix((np.concatenate([-Phi[pr, pc], np.ones(n), ones, -ones, -ones, -ones]),
                       (np.concatenate([pr, j, n + i, n + i, n + k + i, n + k + i]),
                        np.concatenate([pc, 2 * k + j, i, k + i, i, k + i]))),
                      shape=(n + 2 * k, 2 * k + n))
    P = sp.csc_matrix((np.full(n, 1.0 / n), (2 * k + j, 2 * k + j)), shape=(2 * k + n, 2 * k + n))
    q = np.concatenate([np.zeros(k), np.full(k, lam), np.zeros(n)])
    b = np.concatenate([-y, np.zeros(2 * k)])
    solution = solve_conic(P, q, A, b, [clarabel.ZeroConeT(n), clarabel.NonnegativeConeT(2 * k)],
                           "relu_lasso", tol=1e-12)
    return np.asarray(solution.x[:k], dtype=float)


_KKT_SLACK = 1e-10  # a column outside the working set joins it when |Φ_jᵀr|/n > λ(1 + this)


def _peaks(corr: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The candidate columns where ``corr`` has a local maximum along the circle of angles,
    each with its two neighbours."""
    k = len(corr)
    top = np.flatnonzero(candidates & (corr >= np.roll(corr, 1)) & (corr >= np.roll(corr, -1)))
    return np.unique((top[:, None] + np.arange(-1, 2)).ravel() % k)


def _lasso(Phi: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """The grid lasso by a working set (Φ's columns in the circular order of their angles).

    Solve the QP on a few columns, then find the columns outside them that violate the
    optimality condition |Φ_jᵀr|/n ≤ λ (r = y − Φc): the violators form arcs of angles, and
    the peak of each arc, with its two neighbours, joins the set; repeat until none
    violates. Then c, zero off the set, is optimal for the whole grid (the lasso's KKT
    conditions hold column by column; :func:`relu_lasso` checks them again). The first set
    is the peaks of |Φᵀy|. At the smoke shape (n = 20; 720 and 1440 directions) 2–8 rounds
    of QPs on 6–50 columns take 1.4–12 ms, 3.9 ms on average over 16 problems, against
    14–30 ms for one QP on the whole grid.
    """
    n, k = Phi.shape
    work = _peaks(np.abs(Phi.T @ y), np.ones(k, dtype=bool))
    while True:
        c_work = _lasso_qp(Phi[:, work], y, lam)
        corr = np.abs(Phi.T @ (y - Phi[:, work] @ c_work)) / n
        violators = corr > lam * (1 + _KKT_SLACK)
        violators[work] = False
        if not violators.any():
            break
        grown = np.union1d(work, _peaks(corr, violators))
        # A violator's ascent along the circle ends at a violating peak unless it runs into
        # the set, whose columns the QP left at |Φ_jᵀr|/n ≤ λ to ~1e-12: should the solver
        # be less accurate than the slack, every violator joins (the loop always grows).
        work = grown if len(grown) > len(work) else np.union1d(work, np.flatnonzero(violators))
    coef = np.zeros(k)
    coef[work] = c_work
    return coef


def relu_lasso(X, y, lam: float, n_directions: int = 720, *, tol: float = 1e-6) -> ReluLassoSolution:
    """The infinite-width ℓ2-regularized ReLU network for the square loss, on a grid.

    Solves min_c (1/2n)‖Φc − y‖² + λ‖c‖₁ over the grid dictionary Φ (the balanced form of
    min (1/2n)Σ(f(x_i) − y_i)² + (λ/2)Σ_r(a_r² + ‖w_r‖²) at any width), checks the lasso's KKT
    conditions (|Φᵀr/n| ≤ λ with r = y − Φc, and a vanishing duality gap), and bounds the
    continuum optimum from below by the dual: D(v) = vᵀy − (n/2)‖v‖², at v = r/n scaled so
    that sup_φ |Σ_i v_i relu(u(φ)ᵀx_i)| ≤ λ.

    Examples
    --------
    >>> theta = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    >>> X = np.stack([np.cos(theta), np.sin(theta)], 1)
    >>> sol = relu_lasso(X, np.maximum(X[:, 0], 0.0), 1e-3, 360)
    >>> 0 <= sol.relative_gap < 1e-3
    True
    """
    X = _inputs(X)
    n = X.shape[0]
    y = _targets(y, n)
    if not lam > 0:
        raise ShapeError(f"relu_lasso: lam must be > 0 (got {lam})")
    Phi, angles = relu_dictionary(X, n_directions)
    coef = _lasso(Phi, y, lam)
    r = y - Phi @ coef
    objective = float(r @ r / (2 * n) + lam * np.abs(coef).sum())
    v = r / n
    # grid certificate: v is dual feasible on the grid (up to its violation) and the duality
    # gap objective − D(v) vanishes
    infeasibility = max(float(np.abs(Phi.T @ v).max()) / lam - 1.0, 0.0)
    v_grid = v / (1.0 + infeasibility)
    kkt = max(infeasibility, (objective - float(v_grid @ y - n / 2 * v_grid @ v_grid)) / objective)
    if kkt > tol:
        raise SolverError(f"relu_lasso: the solution fails the optimality check (residual {kkt:.1e})")
    v = v * min(1.0, lam / _dual_sup(X, v))
    lower = float(v @ y - n / 2 * v @ v)
    return ReluLassoSolution(objective, lower, coef, angles, kkt)


@dataclass(frozen=True)
class ReluMarginSolution:
    """The optimal normalized margin of an infinite-width two-layer ReLU network.

    Attributes
    ----------
    margin : the grid's γ = 1/(2‖c‖₁), a lower bound on γ*_∞ (normalization ‖Θ‖₂ = 1).
    upper_bound : 1/(2 Σα) for the ℓ1-SVM multipliers α scaled to be feasible on the
        continuum: an upper bound on γ*_∞.
    coef, angles : the grid measure with y_i f(x_i) ≥ 1.
    kkt_residual : the grid ℓ1 SVM's certificate (see :func:`max_margin`).
    """

    margin: float
    upper_bound: float
    coef: np.ndarray
    angles: np.ndarray
    kkt_residual: float

    @property
    def relative_gap(self) -> float:
        return (self.upper_bound - self.margin) / self.upper_bound


def relu_max_margin(X, y, n_directions: int = 720) -> ReluMarginSolution:
    """γ*_∞ = max_{‖Θ‖₂ ≤ 1} min_i y_i f(x_i; Θ) over two-layer ReLU nets of any width, on a grid.

    The ℓ1 SVM over the dictionary (:func:`max_margin` with ``norm=1``, an LP with its own
    KKT check). By Carathéodory the optimum is reached by n + 1 units, so γ*_m = γ*_∞ for
    m ≥ n + 1 (Wei et al. 2019, Theorem 4.3).

    Examples
    --------
    >>> X = np.array([[1.0, 0.0], [-1.0, 0.0]]); y = np.array([1.0, -1.0])
    >>> sol = relu_max_margin(X, y, 360)  # f = relu(x₁) − relu(−x₁): ‖μ‖ = 2, γ* = 1/4
    >>> round(sol.margin, 6), round(sol.upper_bound, 3)
    (0.25, 0.25)
    """
    X = _inputs(X)
    y = _targets(y, X.shape[0])
    Phi, angles = relu_dictionary(X, n_directions)
    svm = max_margin(Phi, y, norm=1)
    v = svm.alpha * y
    total = float(svm.alpha.sum()) / max(_dual_sup(X, v), 1.0)
    return ReluMarginSolution(float(svm.margin / 2), float(1 / (2 * total)), svm.w, angles,
                              float(svm.kkt_residual))
