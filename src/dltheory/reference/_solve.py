"""The two ways the reference solvers call Clarabel: through cvxpy, or directly on a conic
program in Clarabel's standard form; tight tolerances, one-line errors."""

from __future__ import annotations

import warnings

from dltheory.errors import SolverError

_INFEASIBLE = ("infeasible", "infeasible_inaccurate", "unbounded", "unbounded_inaccurate")


def solve(problem, name: str, variable, *, infeasible: str | None = None, tol: float = 1e-10) -> None:
    """Solve ``problem`` by Clarabel (interior point) to ``tol``; raise a one-line SolverError.

    OSQP's and SCS's first-order answers miss the certificates the callers check by 1e-5 on
    ordinary data. "optimal_inaccurate" warnings are silenced: each caller checks its answer
    (a dual certificate, a KKT residual) and that check decides. ``infeasible`` is the
    message for an infeasible or unbounded status (``{status}`` is filled in); ``name`` the
    caller's name for the other messages.

    Each solve builds its Clarabel solver from its own data (``warm_start=False``). With
    cvxpy's default, a problem solved again (a parametrized problem cached per shape) hands
    its new data to the solver the first solve built, and Clarabel's answer then depends, in
    its last bits, on which data that first solve had: a seed's reference would differ
    between a batched run and a run alone. Measured: 2.4 ms a solve against 2.25 ms reused.
    """
    import cvxpy as cp

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            problem.solve(solver=cp.CLARABEL, warm_start=False, tol_gap_abs=tol, tol_gap_rel=tol,
                          tol_feas=tol)
    except cp.error.SolverError as e:
        raise SolverError(f"{name}: the solver failed ({e})") from None
    if infeasible is not None and problem.status in _INFEASIBLE:
        raise SolverError(f"{name}: {infeasible.format(status=problem.status)}")
    if variable.value is None or problem.status not in ("optimal", "optimal_inaccurate"):
        raise SolverError(f"{name}: the solver returned status {problem.status}")


# Clarabel's statuses that mean the primal is infeasible (or, for a dual, unbounded).
_CLARABEL_INFEASIBLE = ("PrimalInfeasible", "AlmostPrimalInfeasible", "DualInfeasible",
                        "AlmostDualInfeasible")


def solve_conic(P, q, A, b, cones, name: str, *, infeasible: str | None = None,
                tol: float = 1e-10):
    """Clarabel on  min ½xᵀPx + qᵀx  s.t.  Ax + s = b, s ∈ cones  (P, A scipy sparse; P None
    for a linear objective); returns Clarabel's solution (``x``, the multipliers ``z``). The
    settings :func:`solve` gives it.

    For the references whose conic form is a few lines (the ℓp SVMs, the Bregman duals, the
    ReLU lasso, the quadratic net's convex program): on their small problems cvxpy spent 1–4×
    Clarabel's solve building and unpacking the data (an ℓ1 SVM at 10 × 30: 1.3 ms against
    0.6 ms direct), and the sweeps solve one or more per seed. Every caller still checks its
    answer (a KKT residual, a duality gap), and its tests pose the same problem in cvxpy and
    compare.
    """
    import clarabel
    import scipy.sparse as sp

    settings = clarabel.DefaultSettings()
    settings.verbose = False
    settings.tol_gap_abs = settings.tol_gap_rel = settings.tol_feas = tol
    P = sp.csc_matrix((len(q), len(q))) if P is None else sp.csc_matrix(P)
    solution = clarabel.DefaultSolver(P, q, sp.csc_matrix(A), b, cones,
                                      settings).solve()
    status = str(solution.status)
    if infeasible is not None and status in _CLARABEL_INFEASIBLE:
        raise SolverError(f"{name}: {infeasible.format(status=status)}")
    if status not in ("Solved", "AlmostSolved"):
        raise SolverError(f"{name}: the solver returned status {status}")
    return solution
