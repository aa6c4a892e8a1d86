"""Flat minima of deep factorizations of matrix sensing: does depth help the flattest solution?

Ding, Drusvyatskiy, Fazel, Harchaoui, "Flat minima generalize for low-rank matrix
recovery", Information and Inference 13(2), 2024: for bilinear sensing ``X = LRᵀ`` (depth 2)
the flattest interpolant (smallest Hessian trace) minimizes the weighted nuclear norm
``‖D_L^{1/2} X D_R^{1/2}‖_*`` over ``{X : 𝒜(X) = y}`` (Lemma 3.1, Thm 3.2) and recovers
the truth past m ≳ r·d Gaussian measurements; their discussion of deeper factorizations
``X = W_L ⋯ W_1`` concludes that depth is *not always beneficial* for flat solutions.
Gatmiry et al. (NeurIPS 2023) prove that under RIP the minimum trace over depth-L
factorizations is, for every L ≥ 2, approximately a monotone function of ‖X‖_*: depth
changes neither the selected solution nor the number of measurements it needs.

Setup (rank 1, n × n, width n, depth L = 2, 3, 4; one (A, M*) per seed and m shared by
all depths, so the depths are compared on the same instances):
(a) the flattest interpolant by an augmented Lagrangian for ``min tr∇²f s.t. r = 0`` (L-BFGS
    on ``f + λ(tr∇²f + ⟨ν, r⟩)``, λ = 10⁻³, eight multiplier updates) and Levenberg–Marquardt
    onto the interpolating set; the closed-form trace
    :meth:`DeepMatrixSensing.hessian_trace` is exact at every point (each residual is
    linear in each factor, so only the Gauss–Newton term remains);
(b) a non-flat interpolant: L-BFGS on f from a unit-scale init, then the same polish;
(c) the independent answer at depth 2: the weighted nuclear norm minimizer by cvxpy
    (:func:`dltheory.reference.min_nuclear_norm` on ``D_L^{-1/2} A_i D_R^{-1/2}``), whose
    optimal value ×2 is the smallest Hessian trace over all interpolants;
(c') where (a) misses the truth above the control, the flattest factorization *of the
    truth*: the same continuation on ``{W : W_L ⋯ W_1 = M*}`` from the balanced factorization
    of M*. Its trace bounds the flattest trace from above: a search that ends sharper than
    it has failed, and a miss flatter than it certifies that the truth is not the flattest;
(d) m on a grid from the truth's degrees of freedom (2n − 1, the negative control, where
    no method can recover) to the threshold 3(2n − 1) + 1 of flat-minima-recovery.

Reading the verdict: the paper's "not always beneficial" is existential; the criterion reads
it, in this setting and before any number was seen, as "depth does not lower the recovery
threshold m*". The paired counts beside it (instances where a deeper flattest recovers and
depth 2's does not, and the reverse) show which way depth acts below the threshold; a miss
is a certified non-recovery only when the search found an interpolant flatter than every
factorization of M* that (c') finds.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch

from dltheory.claims._flat_minima import closed_forms, flattest_minimizer, gauss_newton, minimize_lbfgs
from dltheory.claims.base import Claim, Outcome, Results, Verdict
from dltheory.engine import Sweep
from dltheory.errors import ConfigError
from dltheory.problems import DeepMatrixSensing
from dltheory.reference import min_nuclear_norm

_DEPTHS = (2, 3, 4)
_PROFILES = {
    "smoke": dict(n=6, iterations=60),
    "quick": dict(n=7, iterations=90),
    "full": dict(n=20, iterations=1000),
}
_SEEDS = {"smoke": 1, "quick": 3, "full": 10}

# Criterion constants, fixed from the theorems before running (not tuned on results).
_RECOVERY_TOL = 1e-3  # recovered: ‖X − M*‖/‖M*‖ ≤ this (as in flat-minima-recovery)
_INTERPOLATION_TOL = 1e-9  # an interpolant: loss ≤ 1e-9 · loss(0)
_CONTROL_FAILS = 1e-1  # at m = degrees of freedom the flattest misses by ≥ this (median)
_CVX_TOL = 1e-3  # depth 2: Hessian trace of the flattest / (2 · min weighted nuclear norm) − 1
_SEARCH_TOL = 1e-3  # the flattest found may exceed the truth's flattest factorization's trace by this
_FLAT_INIT, _OTHER_INIT = 0.5, 1.0  # init scales of (a) and (b)


def measurement_grid(n: int, profile: str = "quick") -> list[int]:
    """m from the truth's degrees of freedom d = 2n − 1 (rank 1) to 3d + 1: d, 1.5d, 2d, 3d + 1
    (the smoke profile: only the two ends)."""
    d = 2 * n - 1
    return [d, 3 * d + 1] if profile == "smoke" else [d, int(round(1.5 * d)), 2 * d, 3 * d + 1]


class _FactorizationsOfTruth:
    """``{W : W_L ⋯ W_1 = M*}`` as a problem for :func:`flattest_minimizer`: residuals
    ``√(n1·n2)·vec(X − M*)`` (so that ``½·mean(r²) = ½‖X − M*‖_F²``, the scale of the sensing
    loss, which the penalty weight λ presumes), the sensing problem's Hessian trace."""

    def __init__(self, problem: DeepMatrixSensing):
        self.problem = problem
        self.scale = math.sqrt(problem.n1 * problem.n2)

    def residuals(self, params):
        return self.scale * (self.problem.end_to_end(params) - self.problem.M_star).reshape(-1)

    def loss(self, params):
        return 0.5 * (self.residuals(params) ** 2).mean()

    def hessian_trace(self, params):
        return self.problem.hessian_trace(params)


def weighted_nuclear_minimizer(problem: DeepMatrixSensing):
    """``argmin ‖D_L^{1/2} X D_R^{1/2}‖_*`` s.t. ``𝒜(X) = y``, by cvxpy, and 2× its value.

    With ``Z = D_L^{1/2} X D_R^{1/2}`` the constraints read ``⟨D_L^{-1/2} A_i D_R^{-1/2}, Z⟩ = y_i``:
    a plain minimum nuclear norm problem. ``min_{LRᵀ=X} ⟨D_L, LLᵀ⟩ + ⟨D_R, RRᵀ⟩ =
    2‖D_L^{1/2} X D_R^{1/2}‖_*`` (AM–GM on the SVD), so 2× the optimal value is the smallest
    Hessian trace of a depth-2 interpolant (Ding et al. 2024, Lemma 3.1).
    """
    def inverse_root(D):
        w, V = np.linalg.eigh(D)
        return (V / np.sqrt(w)) @ V.T

    D_left, D_right = (D.cpu().numpy() for D in problem.weights)
    left, right = inverse_root(D_left), inverse_root(D_right)
    A = problem.A.cpu().numpy()
    solution = min_nuclear_norm(left @ A @ right, problem.y.cpu().numpy())
    return left @ solution.M @ right, 2 * solution.nuclear_norm


class FlatMinimaDepth(Claim):
    id = "flat-minima-depth"
    title = "Flat minima of deep factorizations: depth does not help the flattest solution recover"
    source = ("L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui, \"Flat minima generalize for "
              "low-rank matrix recovery\", Information and Inference 13(2), 2024 (Lemma 3.1, Theorem "
              "3.2; discussion of depth); K. Gatmiry, Z. Li, C.-Y. Chuang, S. Reddi, T. Ma, S. Jegelka, "
              "\"The inductive bias of flatness regularization for deep matrix factorization\", "
              "NeurIPS 2023.")
    statement = ("In Gaussian matrix sensing factored as X = W_L⋯W_1, the flattest interpolant recovers "
                 "the low-rank truth at depth 2 (it is the weighted nuclear norm minimizer), and depth "
                 "is not beneficial for flat solutions: depths 3 and 4 need at least as many measurements.")
    criterion = (
        f"Depth 2 (theorem): the flattest interpolant is the cvxpy minimum weighted nuclear norm "
        f"solution (exact; depth-2 recovery is judged on it), the search's Hessian trace equals 2× its "
        f"value within {_CVX_TOL:g} (relative) at every m, and at m = 3(2n−1)+1 it recovers "
        f"(error ≤ {_RECOVERY_TOL:g}) in every seed. Every depth: the flattest found interpolates "
        f"(loss ≤ {_INTERPOLATION_TOL:g}·loss(0)), is no sharper than the non-flat interpolant, and where "
        f"it misses M* it is no sharper than the flattest factorization of M* (+{_SEARCH_TOL:g}); the "
        f"control m = 2n−1 (the truth's degrees of freedom) has median error ≥ {_CONTROL_FAILS:g}. "
        f"Depth (the paper's 'not always beneficial', tested in this setting): the recovery threshold "
        f"m*(L) — the smallest grid m from which on every seed recovers — satisfies m*(3) ≥ m*(2) and "
        f"m*(4) ≥ m*(2).")

    # -- setup -----------------------------------------------------------------------
    def sweep(self, profile: str) -> Sweep:
        base = _PROFILES[profile]
        grid = measurement_grid(base["n"], profile)
        configs = Sweep.grid(base, {"depth": list(_DEPTHS), "m": grid})
        return Sweep(configs, list(range(_SEEDS[profile])), profile, self.id)

    def validate(self, config: Mapping[str, Any]) -> None:
        if config["depth"] not in _DEPTHS:
            raise ConfigError(f"depth must be one of {', '.join(map(str, _DEPTHS))} "
                              f"(got {config['depth']!r})")
        if config["n"] < 3:
            raise ConfigError(f"n must be >= 3 so that width n over-parametrizes rank 1 (got {config['n']})")
        if not 1 <= config["m"] < config["n"] ** 2:
            raise ConfigError(f"m must be in [1, n²) so that interpolants are not unique (got {config['m']})")
        if config["iterations"] < 10:
            raise ConfigError(f"iterations must be >= 10 (got {config['iterations']})")

    # -- run -------------------------------------------------------------------------
    def run(self, config: Mapping[str, Any], seed: int, device: str) -> Outcome:
        # Tiny dense problems: intra-op threads cost more than they save.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._run(config, seed, device)
        finally:
            torch.set_num_threads(threads)

    def _run(self, config: Mapping[str, Any], seed: int, device: str) -> Outcome:
        # The instance is drawn from a generator of (n, m, seed) alone: every depth (and every
        # solver setting) sees the same (A_i, M*), a paired comparison.
        gen = self.generator({"n": config["n"], "m": config["m"]}, seed, device)
        n, m, depth = config["n"], config["m"], config["depth"]
        problem = DeepMatrixSensing(n, n, 1, m, depth=depth, width=n, generator=gen, device=device)
        loss0 = float(problem.loss({k: torch.zeros_like(v) for k, v in problem.ground_truth.items()}))
        init_gen = self.generator(config, seed, device)
        flat = flattest_minimizer(problem, problem.init(init_gen, scale=_FLAT_INIT), config["iterations"])
        other = gauss_newton(problem.residuals, minimize_lbfgs(
            problem.loss, problem.init(init_gen, scale=_OTHER_INIT), config["iterations"]),
            **closed_forms(problem))
        X_cvx, trace_cvx = weighted_nuclear_minimizer(problem)
        X_flat = problem.end_to_end(flat).detach().cpu().numpy()
        metrics = {
            "flat_error": problem.recovery_error(flat),
            "flat_relative_loss": float(problem.loss(flat)) / loss0,
            "flat_trace": float(problem.hessian_trace(flat)),
            "other_error": problem.recovery_error(other),
            "other_relative_loss": float(problem.loss(other)) / loss0,
            "other_trace": float(problem.hessian_trace(other)),
            "min_trace_depth2": trace_cvx,
            "cvx_error": float(np.linalg.norm(X_cvx - problem.M_star.cpu().numpy())
                               / np.linalg.norm(problem.M_star.cpu().numpy())),
            "flat_to_cvx": float(np.linalg.norm(X_flat - X_cvx) / np.linalg.norm(X_cvx)),
        }
        if metrics["flat_error"] > _RECOVERY_TOL and m > measurement_grid(n)[0]:
            # a miss above the control: is the truth flatter (the search failed) or not (certified)?
            truth = flattest_minimizer(_FactorizationsOfTruth(problem), problem.ground_truth,
                                       config["iterations"])
            metrics["truth_trace"] = float(problem.hessian_trace(truth))
            metrics["truth_residual"] = problem.recovery_error(truth)
        return Outcome(metrics, diverged=not np.isfinite(metrics["flat_error"]))

    # -- judge -----------------------------------------------------------------------
    def judge(self, results: Results) -> Verdict:
        runs = results.ok
        depths = sorted({r.config["depth"] for r in runs})
        if 2 not in depths:
            return Verdict.nothing_to_judge(self.criterion)
        grid = sorted({r.config["m"] for r in runs})
        control_m, top_m = grid[0], grid[-1]
        checks: dict[str, bool] = {}
        depth2 = runs.where(depth=2)
        ratio_gap = max(abs(r.metrics["flat_trace"] / r.metrics["min_trace_depth2"] - 1) for r in depth2)
        checks["depth 2: flattest = weighted nuclear norm minimizer (cvxpy)"] = ratio_gap <= _CVX_TOL
        top2 = depth2.where(m=top_m)
        checks[f"depth 2: flattest recovers at m={top_m}"] = bool(top2) and _max_error(top2) <= _RECOVERY_TOL
        thresholds, lines = {}, []
        for depth in depths:
            d_runs = runs.where(depth=depth)
            checks[f"depth {depth}: flattest interpolates"] = \
                max(r.metrics["flat_relative_loss"] for r in d_runs) <= _INTERPOLATION_TOL
            checks[f"depth {depth}: flattest no sharper than the non-flat interpolant"] = all(
                r.metrics["flat_trace"] <= r.metrics["other_trace"] for r in d_runs
                if r.metrics["other_relative_loss"] <= _INTERPOLATION_TOL)
            misses = [r for r in d_runs
                      if r.metrics["flat_error"] > _RECOVERY_TOL and r.config["m"] != control_m]
            if depth == 2:  # a miss of the search that the exact flattest does not share is the search's
                misses = [r for r in misses if _error(r) > _RECOVERY_TOL]
            checks[f"depth {depth}: search at least as flat as the truth"] = all(
                "truth_trace" in r.metrics and r.metrics["truth_residual"] <= _INTERPOLATION_TOL
                and r.metrics["flat_trace"] <= (1 + _SEARCH_TOL) * r.metrics["truth_trace"] for r in misses)
            certified = sum(r.metrics["flat_trace"] < (1 - _SEARCH_TOL) * r.metrics["truth_trace"]
                            for r in misses)
            control = d_runs.where(m=control_m)
            control_median = float(np.median([_error(r) for r in control]))
            checks[f"depth {depth}: control (m={control_m}) fails"] = control_median >= _CONTROL_FAILS
            thresholds[depth] = _threshold(d_runs, grid)
            errors = "/".join(f"{_max_error(d_runs.where(m=m)):.0e}" for m in grid)
            others = float(np.median([r.metrics["other_error"] for r in d_runs.where(m=top_m)]))
            lines.append(f"L={depth}: max flattest error{' (cvxpy)' if depth == 2 else ''} at m="
                         f"{'/'.join(map(str, grid))}: {errors}, "
                         f"m*={_fmt(thresholds[depth])}, {certified}/{len(misses)} misses above the control "
                         f"certified (a flatter interpolant than any factorization of M*), non-flat median "
                         f"error at m={top_m} {others:.2g}")
        for depth in depths:
            if depth > 2:
                checks[f"depth {depth}: m*({depth}) ≥ m*(2)"] = thresholds[depth] >= thresholds[2]
        failed = [k for k, ok in checks.items() if not ok]
        deeper = [d for d in depths if d > 2]
        recovered = {(r.config["depth"], r.config["m"], r.seed): _error(r) <= _RECOVERY_TOL
                     for r in runs if r.config["m"] != control_m}
        deep_pairs = [(ok, recovered.get((2, m, seed))) for (d, m, seed), ok in recovered.items() if d > 2]
        helped = sum(ok and shallow is False for ok, shallow in deep_pairs)
        hurt = sum(not ok and shallow is True for ok, shallow in deep_pairs)
        lines.append(f"paired instances (deeper vs depth 2, same A and M*): depth helped {helped}, "
                     f"hurt {hurt}")
        agree = all(checks[f"depth {d}: m*({d}) ≥ m*(2)"] for d in deeper)
        measured = ("; ".join(lines) + f"; depth-2 search trace/(2·min weighted ‖·‖_*) − 1 ≤ "
                    f"{ratio_gap:.1g}; paper: depth is not always beneficial for flat solutions — ours "
                    + ("agree on the threshold (deeper flattest minimizers need no fewer measurements on "
                       "this grid)" if agree else
                       "disagree here (a deeper flattest recovers with fewer measurements)"))
        if failed:
            measured += "; failed: " + ", ".join(failed)
        return Verdict(not failed, measured, self.criterion, len(results),
                       details={"checks": checks, "thresholds": thresholds, "ratio_gap": ratio_gap})

    # -- figure ----------------------------------------------------------------------
    def figure(self, results: Results):
        import matplotlib.pyplot as plt

        runs = results.ok
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
        for k, depth in enumerate(sorted({r.config["depth"] for r in runs})):
            d_runs = runs.where(depth=depth)
            grid = sorted({r.config["m"] for r in d_runs})
            for key, ls, label in (("flat_error", "-", "flattest"), ("other_error", ":", "non-flat")):
                med = [np.median([r.metrics[key] for r in d_runs.where(m=m)]) for m in grid]
                ax.plot(grid, med, ls, marker="o", color=f"C{k}", label=f"L={depth} {label}")
            bx.scatter([r.metrics["flat_trace"] for r in d_runs], [r.metrics["flat_error"] for r in d_runs],
                       color=f"C{k}", marker="*", s=60, label=f"L={depth} flattest")
            bx.scatter([r.metrics["other_trace"] for r in d_runs], [r.metrics["other_error"] for r in d_runs],
                       color=f"C{k}", s=12, alpha=0.6, label=f"L={depth} non-flat")
        for a in (ax, bx):
            a.axhline(_RECOVERY_TOL, color="k", ls="--", lw=0.8)
            a.set(yscale="log", ylabel="relative recovery error")
        ax.set(xlabel="measurements m", title="median recovery error")
        bx.set(xscale="log", xlabel="Hessian trace", title="flatness vs error")
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig


def _error(r) -> float:
    """The flattest interpolant's recovery error: at depth 2 the exact one (cvxpy), else the search's."""
    return r.metrics["cvx_error"] if r.config["depth"] == 2 else r.metrics["flat_error"]


def _max_error(runs: Results) -> float:
    return max((_error(r) for r in runs), default=float("nan"))


def _threshold(runs: Results, grid: list[int]) -> float:
    """The smallest grid m from which on every seed's flattest recovers (inf if none)."""
    m_star = float("inf")
    for m in reversed(grid):
        at_m = runs.where(m=m)
        if not at_m or _max_error(at_m) > _RECOVERY_TOL:
            break
        m_star = m
    return m_star


def _fmt(m: float) -> str:
    return "none" if m == float("inf") else str(int(m))


CLAIM = FlatMinimaDepth()
