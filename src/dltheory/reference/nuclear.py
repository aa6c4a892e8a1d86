"""Minimum nuclear norm matrix sensing and completion, with a dual certificate: by cvxpy
(Clarabel), and a completion above 20 × 20 by ADMM (:func:`_admm_completion`).

Over-parametrized factorized models trained from small initialization are conjectured
(Gunasekar et al. 2017) and, under RIP, proved (Li, Ma, Zhang 2018) to converge to

    min ‖M‖_*   s.t.   ⟨A_i, M⟩ = y_i  (i = 1..m)                               (P)

— over PSD matrices, where ‖M‖_* = tr M, for the symmetric factorization UUᵀ. The dual is

    max ⟨λ, y⟩   s.t.   ‖Σ λ_i A_i‖_op ≤ 1     (PSD: Σ λ_i A_i ⪯ I),             (D)

and we *check* the solver's answer: the measurements are met, the multipliers are dual
feasible and the duality gap ‖M‖_* − ⟨λ, y⟩ vanishes. Completion is the special case
``A_i = e_j e_kᵀ`` on the observed entries.

References
----------
Recht, Fazel, Parrilo, "Guaranteed minimum-rank solutions of linear matrix equations via
nuclear norm minimization", SIAM Review 2010.
Gunasekar, Woodworth, Bhojanapalli, Neyshabur, Srebro, "Implicit regularization in matrix
factorization", NeurIPS 2017.
Li, Ma, Zhang, "Algorithmic regularization in over-parameterized matrix sensing and neural
networks with quadratic activations", COLT 2018.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from dltheory.errors import ConfigError, ShapeError, SolverError
from dltheory.reference._solve import solve


@dataclass(frozen=True)
class NuclearNormSolution:
    """The minimum nuclear norm matrix and its optimality certificate.

    Attributes
    ----------
    M : the minimizer.
    nuclear_norm : ‖M‖_* (the trace when ``psd``).
    dual : the dual certificate ``Σ λ_i A_i`` (its operator norm is ≤ 1).
    gap : relative duality gap ``(‖M‖_* − ⟨λ, y⟩) / ‖M‖_*``.
    residual : relative measurement error ``‖A(M) − y‖ / ‖y‖``.
    psd : whether M was constrained to be PSD.
    """

    M: np.ndarray
    nuclear_norm: float
    dual: np.ndarray
    gap: float
    residual: float
    psd: bool


def _numpy(name: str, a) -> np.ndarray:
    a = a.detach().cpu().double().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, float)
    if not np.isfinite(a).all():
        raise ShapeError(f"min_nuclear_norm: {name} contains NaN or inf")
    return a


def min_nuclear_norm(A, y, *, psd: bool = False, tol: float = 1e-6) -> NuclearNormSolution:
    """``argmin ‖M‖_*`` subject to ``⟨A_i, M⟩ = y_i`` (matrix sensing).

    Parameters
    ----------
    A : (m, n1, n2) measurement matrices, y : (m,) measurements.
    psd : constrain M to be symmetric PSD (needs n1 = n2); then ‖M‖_* = tr M. This is the
        problem the symmetric factorization UUᵀ is biased toward.
    tol : the largest relative measurement error, dual infeasibility and duality gap accepted.

    Raises
    ------
    SolverError : the solver fails, the measurements cannot be met, or the answer fails the
        optimality check.

    Examples
    --------
    >>> A = np.array([[[2.0, 0.0], [0.0, 1.0]]]); y = np.array([4.0])
    >>> sol = min_nuclear_norm(A, y)  # one measurement: y/σ_max(A) along A's top singular pair
    >>> (np.round(sol.M, 6) + 0.0).tolist(), round(sol.nuclear_norm, 6)  # + 0.0: no -0.0
    ([[2.0, 0.0], [0.0, 0.0]], 2.0)
    """
    A, y = _numpy("A", A), _numpy("y", y)
    if A.ndim != 3 or y.shape != (A.shape[0],):
        raise ShapeError(f"min_nuclear_norm needs A (m, n1, n2) and y (m,); got {A.shape}, {y.shape}")
    _check_square(A.shape[1:], psd)
    A_rows = A.reshape(A.shape[0], -1)

    def measure(M):
        return A_rows @ _vec(M)

    if A.size <= _CACHED_SIZE:
        program, (A_param, y_param) = _sensing_program(A.shape[0], A.shape[1:], psd)
        A_param.value, y_param.value = A_rows, y
    else:
        program = _program(A.shape[1:], psd, measure, y)
    return _solve(program, measure, y, psd, tol, adjoint=lambda lam: np.tensordot(lam, A, axes=1))


# m·n1·n2 up to which a sensing problem is built once per shape (below). Measured (PSD,
# 2-core EPYC): n = 8, m = 20: 14 → 4 ms a solve; n = 16, m = 40: 29 → 22 ms; n = 50,
# m = 450: 4.0 → 3.5 s, nearly all the solver's own, while the process grew by 420 MB over
# a fresh and two cached solves: past this size a cached problem saves little, holds much.
_CACHED_SIZE = 50_000


@lru_cache(maxsize=16)
def _sensing_program(m: int, shape: tuple[int, int], psd: bool):
    """(P) for m measurements of ``shape`` matrices, with A (rows vec(A_i)) and y as cvxpy
    Parameters (DPP): a sweep's later solves skip canonicalization, most of a small
    problem's time. The data enter linearly, so Clarabel gets what a fresh build gives."""
    import cvxpy as cp

    A, y = cp.Parameter((m, shape[0] * shape[1])), cp.Parameter(m)
    return _program(shape, psd, lambda M: A @ _vec(M), y), (A, y)


def _check_square(shape, psd: bool) -> None:
    if psd and shape[0] != shape[1]:
        raise ShapeError(f"min_nuclear_norm: psd=True needs square matrices, got shape {shape}")


def _program(shape, psd: bool, measure, y):
    """(P) as (problem, M, constraint): ``measure(M) == y`` (y an array or a Parameter)."""
    import cvxpy as cp

    M = cp.Variable(shape, PSD=True) if psd else cp.Variable(shape)
    constraint = measure(M) == y
    return cp.Problem(cp.Minimize(cp.trace(M) if psd else cp.normNuc(M)), [constraint]), M, constraint


def min_nuclear_norm_completion(M_observed, mask, *, psd: bool = False, tol: float = 1e-6,
                                method: str = "auto") -> NuclearNormSolution:
    """``argmin ‖M‖_*`` subject to ``M_jk = M_observed_jk`` on the entries where ``mask`` is set.

    Parameters
    ----------
    M_observed : (n1, n2) matrix (only the masked entries are read), mask : (n1, n2) boolean
        or 0/1 array of observed entries.
    psd, tol : as in :func:`min_nuclear_norm`.
    method : ``"conic"`` — Clarabel (interior point) on the SDP; the most accurate, but its
        (n1 + n2)² PSD cone costs time ∝ n⁵ and memory ∝ n⁴ (n = 50: 21 s and 1.6 GB; 100:
        ~12 min and ~20 GB, extrapolated). ``"admm"`` — ADMM with one SVD (eigendecomposition
        if ``psd``) an iteration (:func:`_admm_completion`; n = 100: ~1 s), stopped by the
        same certificate. ``"auto"``: conic up to ``_CONIC_ENTRIES`` entries, else ADMM.

    Examples
    --------
    >>> M = np.ones((3, 3)); mask = 1 - np.eye(3)  # rank one, diagonal hidden
    >>> np.round(min_nuclear_norm_completion(M, mask, psd=True).M, 5).tolist()
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    M_observed, mask = _numpy("M_observed", M_observed), _numpy("mask", mask).astype(bool)
    if M_observed.ndim != 2 or mask.shape != M_observed.shape:
        raise ShapeError(f"min_nuclear_norm_completion needs M_observed and mask of one 2-d shape; "
                         f"got {M_observed.shape}, {mask.shape}")
    if not mask.any():
        raise ShapeError("min_nuclear_norm_completion: the mask observes no entry")
    index = np.flatnonzero(mask.reshape(-1))

    def adjoint(lam):
        out = np.zeros(mask.size)
        out[index] = lam
        return out.reshape(mask.shape)

    _check_square(mask.shape, psd)
    if method not in ("auto", "conic", "admm"):
        raise ConfigError(f"min_nuclear_norm_completion: method must be auto, conic or admm, "
                          f"got {method!r}")
    measure, y = (lambda M: _vec(M)[index]), M_observed.reshape(-1)[index]
    if method == "admm" or (method == "auto" and mask.size > _CONIC_ENTRIES):
        M, lam = _admm_completion(M_observed, mask, psd, tol)
        return _certify(M, lam, measure, y, psd, tol, adjoint=adjoint)
    return _solve(_program(mask.shape, psd, measure, y), measure, y, psd, tol, adjoint=adjoint)


# Entries up to which "auto" completion goes to the interior point: Clarabel takes 0.05 s
# at 12 × 12 and 0.35 s at 20 × 20, then 2.2 s at 30 × 30 and 7.5 s at 40 × 40, where ADMM
# takes 0.03–0.3 s (2-core EPYC). Up to 20 × 20 the interior point's tighter answer is cheap.
_CONIC_ENTRIES = 400

# ADMM stops when its duality gap (the one the check recomputes) is below this fraction of
# ``tol``, and fails with a SolverError after _ADMM_ITERATIONS. At 0.1 two of the deep
# factorization's 100 × 100 instances stalled at 1.1e-7 and 2.3e-7 after 50 000 iterations
# (ADMM is sublinear near a degenerate optimum); at 0.5 its 150 instances (three sweeps'
# configs, 10 seeds, 5 observation counts) took at most 6 021.
_ADMM_TARGET = 0.5
_ADMM_ITERATIONS = 50_000
_ADMM_CHECK_EVERY = 10
# Over-relaxation α (Boyd et al. §3.4.3 suggest 1.5–1.8). Measured over 15 instances
# (n = 100, rank 5, 1500–2500 entries; 30 × 30, PSD and not): 58 395 iterations in all at
# α = 1, 39 345 at 1.6, 35 775 at 1.8, fewer for every instance.
_ADMM_RELAXATION = 1.8
# Anderson memory. Without acceleration the deep factorization's full instances (n = 100,
# rank 5, 1500–4000 entries, 5 seeds) took 124 s, up to 22 800 iterations; with memory 10
# 33 s, at most 3 020, fewer for every instance.
_ANDERSON_MEMORY = 10


def _admm_completion(M_observed, mask, psd: bool, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """min ‖X‖_* (tr X, X ⪰ 0 if ``psd``) s.t. P_Ω(X) = b, by ADMM on the split X = Y;
    returns the answer M and its multipliers λ on Ω, for :func:`_certify`:

        X ← prox_{‖·‖_*/ρ}(Y − Λ/ρ)     (singular value thresholding at 1/ρ)
        X̂ ← αX + (1 − α)Y               (over-relaxation)
        Y ← X̂ + Λ/ρ with Y_Ω = b        (projection onto the data)
        Λ ← Λ + ρ(X̂ − Y)

    After the first iteration Λ vanishes off Ω (the Y-step's optimality) and Y = b on Ω, so
    the state is one matrix z = Y − Λ/ρ (z = Y off Ω, b − Λ/ρ on Ω): X = prox(z),
    Y = b on Ω and z off it, and z ← X̂ off Ω, z + b − X̂ on Ω. That fixed-point map is
    Anderson-accelerated (type II, the last ``_ANDERSON_MEMORY`` differences; Walker & Ni,
    SIAM J. Numer. Anal. 2011), and ρ is balanced every few iterations (Boyd et al.,
    "Distributed optimization and statistical learning via ADMM", 2011, §3.4.1: ×2 or /2
    when the primal and dual residuals differ tenfold; Λ is kept, the history dropped).

    At a fixed point −Λ ∈ ∂‖X‖_*, so λ = −Λ_Ω = ρ(z_Ω − b) is a dual point; scaled by
    max(1, ‖P_Ω*(λ)‖_op) it is exactly feasible, and Y meets the data exactly, so
    ‖Y‖_* − ⟨λ, b⟩ bounds Y's suboptimality. The iterations stop when that relative gap is
    below ``_ADMM_TARGET · tol``; the caller then checks the answer as it checks the
    interior point's. With ``psd`` the answer is X (PSD, meeting the data to the residual
    checked) and the dual is scaled to P_Ω*(λ) ⪯ I.

    Written by hand: cvxpy's first-order solver (SCS) poses the same (n1 + n2)² PSD cone
    as the interior point, and this needs only an n1 × n2 SVD an iteration;
    ``scipy.optimize.anderson`` is a root finder, with no place for the certificate's stop
    or the ρ updates.
    """
    scale = max(float(np.linalg.norm(M_observed[mask])), 1e-300)
    B = np.where(mask, M_observed / scale, 0.0)  # solve for M / scale: ρ's start and the stop are scale-free
    b = B[mask]
    rho = 1.0 / max(float(np.linalg.norm(B, 2)), 1e-300)
    z = B.copy()  # Y = B, Λ = 0
    anderson = _Anderson(_ANDERSON_MEMORY)
    for it in range(_ADMM_ITERATIONS):
        Y = np.where(mask, B, z)
        X = _nuclear_prox(z, 1.0 / rho, psd)
        X_relaxed = _ADMM_RELAXATION * X + (1.0 - _ADMM_RELAXATION) * Y
        g = np.where(mask, z + B - X_relaxed, X_relaxed)
        if it % _ADMM_CHECK_EVERY:
            z = anderson.step(z, g)
            continue
        lam = _feasible_dual(rho * (z[mask] - b), mask, psd)
        M = X if psd else Y
        nuclear = float(np.trace(M)) if psd else float(np.linalg.svd(M, compute_uv=False).sum())
        gap = (nuclear - float(lam @ b)) / max(nuclear, 1e-300)
        residual = float(np.linalg.norm(M[mask] - b))
        if max(abs(gap), residual) <= _ADMM_TARGET * tol:  # with psd, X's gap may be < 0
            break
        primal_res = np.linalg.norm(X - Y)
        dual_res = rho * np.linalg.norm(np.where(mask, 0.0, g - z))  # ρ‖Y⁺ − Y‖
        new_rho = (2.0 * rho if primal_res > 10 * dual_res else
                   0.5 * rho if dual_res > 10 * primal_res else rho)
        if new_rho == rho:
            z = anderson.step(z, g)
        else:  # keep Λ_Ω = ρ(b − z_Ω) under the new ρ
            z = np.where(mask, B - (rho / new_rho) * (B - g), g)
            rho = new_rho
            anderson.clear()
    else:
        raise SolverError(f"min_nuclear_norm_completion: ADMM did not reach the duality gap "
                          f"{_ADMM_TARGET * tol:.0e} in {_ADMM_ITERATIONS} iterations (gap "
                          f"{gap:.1e}, residual {residual:.1e}); method='conic' may")
    M = M * scale
    if not psd:
        M[mask] = M_observed[mask]  # the data exactly, not to the rounding of ·/scale·scale
    return M, lam


class _Anderson:
    """Type-II Anderson acceleration of a fixed-point iteration z ← g(z): the next z is
    g(z) − ΔG γ, γ the least-squares fit of the residual f = g(z) − z by the last
    ``memory`` residual differences ΔF (the plain step g(z) while there are none)."""

    def __init__(self, memory: int):
        self.memory = memory
        self.clear()

    def clear(self) -> None:
        self.dF, self.dG, self.last = [], [], None

    def step(self, z: np.ndarray, g: np.ndarray) -> np.ndarray:
        f, gv = (g - z).reshape(-1), g.reshape(-1)
        if self.last is not None:
            self.dF.append(f - self.last[0])
            self.dG.append(gv - self.last[1])
            if len(self.dF) > self.memory:
                del self.dF[0], self.dG[0]
        self.last = (f, gv)
        if not self.dF:
            return g
        gamma = np.linalg.lstsq(np.stack(self.dF, 1), f, rcond=None)[0]
        return (gv - np.stack(self.dG, 1) @ gamma).reshape(g.shape)


def _nuclear_prox(A, t: float, psd: bool) -> np.ndarray:
    """argmin t‖X‖_* + ½‖X − A‖²_F: A's singular values shrunk by t; with ``psd``, over
    X ⪰ 0 with t·tr X, the eigenvalues of (A + Aᵀ)/2 shrunk by t and clipped at 0."""
    if psd:
        w, V = np.linalg.eigh(0.5 * (A + A.T))
        return (V * np.maximum(w - t, 0.0)) @ V.T
    U, s, Vt = np.linalg.svd(A, full_matrices=False)
    return (U * np.maximum(s - t, 0.0)) @ Vt


def _feasible_dual(lam: np.ndarray, mask: np.ndarray, psd: bool) -> np.ndarray:
    """λ scaled into the dual's feasible set: ‖P_Ω*(λ)‖_op ≤ 1 (with ``psd``: sym ⪯ I)."""
    Z = np.zeros(mask.shape)
    Z[mask] = lam
    top = float(np.linalg.eigvalsh(0.5 * (Z + Z.T))[-1]) if psd else float(np.linalg.norm(Z, 2))
    return lam / max(top, 1.0)


def _vec(M):
    """Row-major vectorization, for cvxpy expressions and arrays alike."""
    import cvxpy as cp

    return cp.vec(M, order="C") if isinstance(M, cp.Expression) else M.reshape(-1)


def _solve(program, measure, y, psd: bool, tol: float, *, adjoint) -> NuclearNormSolution:
    """Solve ``program`` (see :func:`_program`, its data set) and check the answer against
    the dual: ``measure`` and ``adjoint`` are A and its adjoint on arrays."""
    problem, M, constraint = program
    solve(problem, "min_nuclear_norm", M,
          infeasible="no matrix meets the measurements" + (" (with M PSD)" if psd else ""))
    # cvxpy's multiplier of an equality enters the Lagrangian with a minus sign here:
    # L = ‖M‖_* − ⟨λ, A(M) − y⟩, so Σ λ_i A_i is a subgradient of ‖·‖_* at M.
    lam = -np.asarray(constraint.dual_value, dtype=float).reshape(-1)
    return _certify(np.asarray(M.value, dtype=float), lam, measure, y, psd, tol, adjoint=adjoint)


def _certify(M_val, lam, measure, y, psd: bool, tol: float, *, adjoint) -> NuclearNormSolution:
    """The answer M with its multipliers λ, checked: measurements met, Σ λ_i A_i dual
    feasible, and the duality gap ‖M‖_* − ⟨λ, y⟩ small, each within ``tol``."""
    if psd:
        M_val = 0.5 * (M_val + M_val.T)
    Z = adjoint(lam)
    if psd:
        Z = 0.5 * (Z + Z.T)
        nuclear = float(np.trace(M_val))
        dual_violation = max(float(np.linalg.eigvalsh(Z).max()) - 1.0, 0.0)
    else:
        nuclear = float(np.linalg.svd(M_val, compute_uv=False).sum())
        dual_violation = max(float(np.linalg.norm(Z, 2)) - 1.0, 0.0)
    scale = max(nuclear, 1e-300)
    residual = float(np.linalg.norm(measure(M_val) - y) / max(np.linalg.norm(y), 1e-300))
    gap = (nuclear - float(lam @ y)) / scale
    worst = max(residual, dual_violation, abs(gap))
    if worst > tol:
        raise SolverError(f"min_nuclear_norm: the solution fails the optimality check (measurement "
                          f"error {residual:.1e}, dual infeasibility {dual_violation:.1e}, duality "
                          f"gap {gap:.1e}; tol {tol:.0e})")
    return NuclearNormSolution(M=M_val, nuclear_norm=nuclear, dual=Z, gap=gap, residual=residual,
                               psd=psd)


@dataclass(frozen=True)
class PCPSolution:
    """The principal component pursuit split of M and its optimality certificate.

    Attributes
    ----------
    X, S : the low-rank and sparse parts, ``X + S = M``.
    objective : ``‖X‖_* + λ‖S‖₁``.
    dual : the certificate Y (``‖Y‖_op ≤ 1``, ``max|Y_ij| ≤ λ``, ``⟨Y, M⟩`` = objective).
    gap : relative duality gap.
    """

    X: np.ndarray
    S: np.ndarray
    objective: float
    dual: np.ndarray
    gap: float


def principal_component_pursuit(M, weight: float, *, tol: float = 1e-6) -> PCPSolution:
    """``argmin ‖X‖_* + λ‖S‖₁`` subject to ``X + S = M`` (Candès, Li, Ma, Wright 2011).

    The dual is ``max ⟨Y, M⟩`` over ``‖Y‖_op ≤ 1``, ``max|Y_ij| ≤ λ``; the solver's answer is
    checked against it: dual feasibility and a vanishing duality gap, within ``tol``.

    Parameters
    ----------
    M : (n1, n2) data matrix. weight : λ > 0 (1/√max(n1, n2) in the paper's theorem).

    Raises
    ------
    SolverError : the solver fails or the answer fails the optimality check.

    Examples
    --------
    >>> M = np.ones((4, 4)); M[0, 1] += 5.0  # rank one plus one outlier
    >>> sol = principal_component_pursuit(M, 0.5)
    >>> np.round(sol.X, 5).tolist()[0], round(float(sol.S[0, 1]), 5)
    ([1.0, 1.0, 1.0, 1.0], 5.0)
    """
    import cvxpy as cp

    M = _numpy("M", M)
    if M.ndim != 2:
        raise ShapeError(f"principal_component_pursuit needs a 2-d M, got shape {M.shape}")
    if not weight > 0:
        raise ConfigError(f"principal_component_pursuit: weight must be > 0, got {weight}")
    X, S = cp.Variable(M.shape), cp.Variable(M.shape)
    constraint = X + S == M
    problem = cp.Problem(cp.Minimize(cp.normNuc(X) + weight * cp.sum(cp.abs(S))), [constraint])
    solve(problem, "principal_component_pursuit", X)
    X_val = np.asarray(X.value, dtype=float)
    S_val = M - X_val  # exact feasibility; the solver's S differs by its feasibility tolerance
    objective = float(np.linalg.svd(X_val, compute_uv=False).sum() + weight * np.abs(S_val).sum())
    Y = -np.asarray(constraint.dual_value, dtype=float)  # L = obj − ⟨Y, X + S − M⟩, as in _solve
    violation = max(float(np.linalg.norm(Y, 2)) - 1.0, float(np.abs(Y).max()) / weight - 1.0, 0.0)
    gap = (objective - float((Y * M).sum())) / max(objective, 1e-300)
    if max(violation, abs(gap)) > tol:
        raise SolverError(f"principal_component_pursuit: the solution fails the optimality check "
                          f"(dual infeasibility {violation:.1e}, duality gap {gap:.1e}; tol {tol:.0e})")
    return PCPSolution(X=X_val, S=S_val, objective=objective, dual=Y, gap=gap)
