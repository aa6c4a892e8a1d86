"""Weakly regularized cross-entropy on a two-layer ReLU net attains the max normalized margin.

Wei, Lee, Liu, Ma (NeurIPS 2019), Theorem 4.1: for a homogeneous network f(x; Θ) and
W_λ ∈ argmin L_λ(Θ) = (1/n) Σ_i log(1 + exp(−y_i f(x_i; Θ))) + λ‖Θ‖₂², the normalized margin
γ(Θ_λ) = min_i y_i f(x_i; Θ_λ)/‖Θ_λ‖² tends to γ*_m = max_{‖Θ‖₂ ≤ 1} min_i y_i f(x_i; Θ) as
λ → 0 (the linear case is Rosset, Zhu, Hastie 2004); Theorem 4.3: for the two-layer ReLU
network f = Σ_r a_r relu(w_rᵀx), γ*_m is non-decreasing in the width m and equals the
infinite-width γ*_∞ once m ≥ n + 1.

Reference (:func:`dltheory.reference.relu_max_margin`): balancing each unit, γ*_∞ is half the
ℓ1 max-margin over the dictionary {relu(u(φ)ᵀx)}, with planar inputs an LP over a grid of
angles (cvxpy), sandwiched between the grid value and a continuum-feasible dual bound.

What "argmin" means here: L_λ is non-convex, so each width runs R restarts of L-BFGS (closed-
form gradient, float64); at each λ a restart keeps the better of two solves, one warm-started
from its solution at the previous (larger) λ (units that weight decay killed restart from their
initial values) and one from its own initialization; W_λ is the restart with the lowest L_λ.
(Warm starts alone left every restart of one width in a non-separating local minimum, margin 0,
while the narrower and wider nets separated.) At width m ≥ n + 1 the reference gives a network
attaining min_B L_λ(B·Θ*) (Carathéodory: a grid measure with margin γ*_grid is an (n+1)-unit
net), so the global minimum is at most that value: the run must reach it. From that bound,
the global minimizer's margin obeys (comparing with B² = log(1/λ)/γ*)

    γ(Θ_λ)/γ*  ≥  −log(exp(nU) − 1) / (γ* + log(1/λ)),   U = λ(1 + log(1/λ)/γ*),

a slow, logarithmic rate (reported). Control: the kernel regime — the first layer frozen at its
random initialization, only a trained with the same λ path (its limit is the ℓ2 SVM of the
random features, not the ℓ1 max-margin over all directions); its margin is measured with the
best normalization of its function, min_i y_i f(x_i)/(2 Σ_r |a_r|‖w_r‖).

Setup: n points on the unit circle at uniform angles, labelled by the sign of a teacher of k
(odd) equally spaced ReLU units, keeping points with |teacher| ≥ 0.1 (a margin of the data).
Seeds run one after the other (L-BFGS's line searches do not batch).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Mapping

import numpy as np
import torch
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit

from dltheory.claims._planar_relu import teacher, unit
from dltheory.claims.base import Claim, Outcome, Results, Verdict
from dltheory.engine import Sweep
from dltheory.errors import ConfigError
from dltheory.reference import relu_max_margin

_PROFILES = {
    "smoke": dict(n=10, widths=[2, 4, 11], lams=[1e-2, 1e-3, 1e-4], restarts=2, teacher_units=3,
                  grid=720),
    "quick": dict(n=20, widths=[2, 3, 5, 10, 21], lams=[10.0 ** -k for k in range(2, 9)],
                  restarts=6, teacher_units=5, grid=1440),
    "full": dict(n=60, widths=[2, 3, 5, 7, 10, 20, 40, 61, 120],
                 lams=[10.0 ** -k for k in range(2, 11)], restarts=16, teacher_units=7, grid=5760),
}
_SEEDS = {"smoke": 2, "quick": 4, "full": 16}
GRID_TOL = 1e-3  # the reference's certified sandwich must be this tight
WIDTH_SLACK = 0.01  # γ̂_m non-decreasing in m, up to 1% of γ*
CONTROL_MAX = 0.9  # the frozen-feature control stays below 90% of γ*


def loss_and_grad(theta: np.ndarray, X: np.ndarray, y: np.ndarray, lam: float, m: int,
                  train_inner: bool = True, W_fixed: np.ndarray | None = None):
    """L_λ(Θ) = mean log(1 + exp(−y f)) + λ‖Θ‖² and its gradient; Θ = (a, W) flattened.

    With ``train_inner=False`` Θ is ``a`` alone and W is ``W_fixed`` (its λ‖W‖² is a constant,
    included so the objectives are comparable).
    """
    a = theta[:m]
    W = theta[m:].reshape(m, 2) if train_inner else W_fixed
    pre = X @ W.T
    H = np.maximum(pre, 0.0)
    margins = y * (H @ a)
    loss = np.logaddexp(0.0, -margins).mean() + lam * (a @ a + (W * W).sum())
    s = -y * expit(-margins) / len(y)  # dL/df
    grad_a = H.T @ s + 2 * lam * a
    if not train_inner:
        return loss, grad_a
    grad_W = a[:, None] * (((pre > 0) * s[:, None]).T @ X) + 2 * lam * W
    return loss, np.concatenate([grad_a, grad_W.ravel()])


def normalized_margin(a: np.ndarray, W: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    """γ(Θ) = min_i y_i f(x_i; Θ) / ‖Θ‖₂² (f is 2-homogeneous in Θ)."""
    return float((y * (np.maximum(X @ W.T, 0.0) @ a)).min() / (a @ a + (W * W).sum()))


def balanced_margin(a: np.ndarray, W: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    """The best normalized margin of the same function: min_i y_i f(x_i) / (2 Σ_r |a_r|‖w_r‖)."""
    return float((y * (np.maximum(X @ W.T, 0.0) @ a)).min()
                 / (2 * (np.abs(a) * np.linalg.norm(W, axis=1)).sum()))


def _lbfgs(fun, x0):
    res = minimize(fun, x0, jac=True, method="L-BFGS-B",
                   options=dict(maxiter=20_000, maxfun=40_000, ftol=1e-15, gtol=1e-11))
    return res.x


def _revive(theta: np.ndarray, init: np.ndarray, m: int) -> np.ndarray:
    """Units that weight decay shrank to (a, w) = 0 — a stationary point of a ReLU unit, which
    no gradient method leaves — restart from their initial values before the next λ."""
    a, W = theta[:m].copy(), theta[m:].reshape(m, 2).copy()
    dead = a ** 2 + (W ** 2).sum(1) < 1e-12
    a[dead], W[dead] = init[:m][dead], init[m:].reshape(m, 2)[dead]
    return np.concatenate([a, W.ravel()])


def comparator_objective(margins_at_unit_norm: np.ndarray, lam: float) -> float:
    """min_B mean log(1 + exp(−B² q_i)) + λB² for a network with ‖Θ‖ = 1 and margins q."""
    f = lambda log_b2: (np.logaddexp(0.0, -math.exp(log_b2) * margins_at_unit_norm).mean()  # noqa: E731
                        + lam * math.exp(log_b2))
    res = minimize_scalar(f, bounds=(-10.0, 40.0), method="bounded",
                          options=dict(xatol=1e-12, maxiter=1000))
    return float(min(res.fun, f(0.0)))


def theory_ratio_bound(gamma: float, lam: float, n: int) -> float:
    """Lower bound on γ(Θ_λ)/γ* for the global minimizer (module docstring)."""
    U = lam * (1 + math.log(1 / lam) / gamma)
    return -math.log(math.expm1(n * U)) / (gamma + math.log(1 / lam))


class RegularizedCEMaxMargin(Claim):
    id = "regularized-ce-max-margin"
    title = "Weakly regularized cross-entropy → max normalized margin, non-decreasing in width"
    source = ("C. Wei, J. D. Lee, Q. Liu, T. Ma, \"Regularization matters: generalization and "
              "optimization of neural nets v.s. their induced kernel\", NeurIPS 2019, Theorems 4.1 "
              "and 4.3; S. Rosset, J. Zhu, T. Hastie, \"Boosting as a regularized path to a maximum "
              "margin classifier\", JMLR 2004.")
    statement = ("As λ → 0 the normalized margin of argmin logistic loss + λ‖Θ‖² of a two-layer ReLU "
                 "network tends to the optimal normalized margin γ*_m, and γ*_m is non-decreasing in "
                 "the width m (equal to the infinite-width γ*_∞ for m ≥ n + 1).")
    criterion = (
        f"For every seed: the infinite-width reference is certified (LP KKT residual ≤ 1e-6, grid "
        f"value and continuum dual bound within {GRID_TOL:g}); no network's margin exceeds the "
        f"certified upper bound; at the widest width (≥ n + 1) the run reaches, at every λ, the "
        f"objective of the reference network min_B L_λ(B·Θ*) (so it is at least as good as the "
        f"global-minimizer bound requires) and its gap 1 − γ(Θ_λ)/γ* at the smallest λ is at most "
        f"half the gap at the largest; the best margin found at width m is non-decreasing in m (up "
        f"to {WIDTH_SLACK:g}·γ*); the control (first layer frozen) ends below {CONTROL_MAX:g}·γ* and "
        f"below the trained net."
    )

    cpu_only = "it trains with scipy (L-BFGS, minimize_scalar) on the host"

    def sweep(self, profile: str) -> Sweep:
        return Sweep([dict(_PROFILES[profile])], list(range(_SEEDS[profile])), profile, self.id)

    def validate(self, config: Mapping[str, Any]) -> None:
        n, widths, lams = config["n"], list(config["widths"]), list(config["lams"])
        if n < 2 or config["restarts"] < 1 or config["grid"] < 8:
            raise ConfigError(f"need n >= 2, restarts >= 1, grid >= 8 (got n={n}, "
                              f"restarts={config['restarts']}, grid={config['grid']})")
        if not widths or min(widths) < 1 or widths != sorted(set(widths)) or max(widths) < n + 1:
            raise ConfigError(f"widths must be increasing positive integers ending at >= n + 1 = "
                              f"{n + 1} (where γ*_m = γ*_∞), got {widths}")
        if len(lams) < 2 or min(lams) <= 0 or max(lams) >= 1 or lams != sorted(set(lams), reverse=True):
            raise ConfigError(f"lams must be >= 2 decreasing values in (0, 1), got {lams}")
        if config["teacher_units"] < 1 or config["teacher_units"] % 2 == 0:
            raise ConfigError(f"teacher_units must be odd (got {config['teacher_units']})")

    # -- run -------------------------------------------------------------------------
    def _instance(self, config, seed, device):
        """Points with |teacher| ≥ 0.1, their labels, and the restarts' initializations."""
        g = self.generator(config, seed, device)
        n = config["n"]
        X = unit(2 * math.pi * torch.rand(8 * n, generator=g, dtype=torch.float64, device=device))
        t = teacher(X, config["teacher_units"], g)
        keep = torch.nonzero(t.abs() >= 0.1)[:n, 0]
        if len(keep) < n:
            raise ConfigError(f"n = {n}: too few points with |teacher| >= 0.1 among {8 * n} draws")
        inits = {m: [torch.randn(3 * m, generator=g, dtype=torch.float64, device=device).cpu().numpy()
                     for _ in range(config["restarts"])] for m in config["widths"]}
        return X[keep].cpu().numpy(), torch.sign(t[keep]).cpu().numpy(), inits

    def run(self, config: Mapping[str, Any], seed: int, device: str) -> Outcome:
        X, y, inits = self._instance(config, seed, device)
        n, lams, widths = len(y), list(config["lams"]), list(config["widths"])
        ref = relu_max_margin(X, y, config["grid"])
        gamma = ref.margin
        # the reference network at unit norm: its margins, for the comparator objective
        Phi = np.maximum(X @ unit(torch.from_numpy(ref.angles)).numpy().T, 0.0)
        q_ref = y * (Phi @ ref.coef) / (2 * np.abs(ref.coef).sum())
        metrics: dict[str, Any] = {"gamma_star": gamma, "gamma_upper": float(ref.upper_bound),
                                   "reference_gap": float(ref.relative_gap),
                                   "reference_kkt_residual": float(ref.kkt_residual)}
        curves: dict[str, list] = {"lam": lams}
        best_seen = -math.inf
        for m in widths:
            paths = []
            for x0 in inits[m]:
                theta, path = x0, []
                for lam in lams:
                    fun = partial(loss_and_grad, X=X, y=y, lam=lam, m=m)
                    warm, fresh = _lbfgs(fun, _revive(theta, x0, m)), _lbfgs(fun, x0)
                    theta = warm if fun(warm)[0] <= fun(fresh)[0] else fresh
                    path.append((fun(theta)[0],
                                 normalized_margin(theta[:m], theta[m:].reshape(m, 2), X, y)))
                paths.append(path)
            best = [min((p[j] for p in paths), key=lambda v: v[0]) for j in range(len(lams))]
            curves[f"ratio_m{m}"] = [b[1] / gamma for b in best]
            curves[f"objective_m{m}"] = [float(b[0]) for b in best]
            metrics[f"best_margin_m{m}"] = max(v[1] for p in paths for v in p)
            best_seen = max(best_seen, metrics[f"best_margin_m{m}"])
        wide = widths[-1]
        curves["comparator_objective"] = [comparator_objective(q_ref, lam) for lam in lams]
        curves["theory_ratio_bound"] = [theory_ratio_bound(gamma, lam, n) for lam in lams]
        metrics["objective_excess"] = float(max(  # > 0: the run missed the reference network's value
            (o - c) / c for o, c in zip(curves[f"objective_m{wide}"], curves["comparator_objective"])))
        metrics["gap_lam_max"] = 1 - curves[f"ratio_m{wide}"][0]
        metrics["gap_lam_min"] = 1 - curves[f"ratio_m{wide}"][-1]
        metrics["max_margin_over_upper"] = float(best_seen / ref.upper_bound)
        # control: the kernel regime, first layer frozen at restart 0's initialization
        W0 = inits[wide][0][wide:].reshape(wide, 2)
        a = inits[wide][0][:wide]
        control = []
        for lam in lams:
            a = _lbfgs(partial(loss_and_grad, X=X, y=y, lam=lam, m=wide, train_inner=False,
                               W_fixed=W0), a)
            control.append(balanced_margin(a, W0, X, y) / gamma)
        curves["control_ratio"] = control
        metrics["control_ratio_lam_min"] = control[-1]
        metrics["ratio_lam_min"] = curves[f"ratio_m{wide}"][-1]
        return Outcome(metrics, curves)

    # -- judge -----------------------------------------------------------------------
    def judge(self, results: Results) -> Verdict:
        if not results:
            return Verdict.nothing_to_judge(self.criterion)
        widths = list(results[0].config["widths"])
        m = [r.metrics for r in results]
        checks = {
            "reference certified": all(x["reference_kkt_residual"] <= 1e-6
                                       and x["reference_gap"] <= GRID_TOL for x in m),
            "no margin above the certified γ*": all(x["max_margin_over_upper"] <= 1 + 1e-6 for x in m),
            "reaches the reference network's objective": all(x["objective_excess"] <= 1e-6 for x in m),
            "margin gap shrinks as λ → 0": all(x["gap_lam_min"] <= x["gap_lam_max"] / 2 for x in m),
            "γ*_m non-decreasing in width": all(
                x[f"best_margin_m{b}"] >= x[f"best_margin_m{s}"] - WIDTH_SLACK * x["gamma_star"]
                for x in m for s, b in zip(widths, widths[1:])),
            "control below": all(x["control_ratio_lam_min"] <= CONTROL_MAX
                                 and x["control_ratio_lam_min"] < x["ratio_lam_min"] for x in m),
        }
        med = lambda k: float(np.median([x[k] for x in m]))  # noqa: E731
        lams = results[0].config["lams"]
        failed = [k for k, ok in checks.items() if not ok]
        measured = (
            f"median over {len(m)} seeds: γ*∞ = {med('gamma_star'):.4g} (certified to "
            f"{med('reference_gap'):.0e}); width {widths[-1]}: 1 − γ(Θ_λ)/γ* = {med('gap_lam_max'):.3f} "
            f"at λ={lams[0]:g} → {med('gap_lam_min'):.4f} at λ={lams[-1]:g}; best γ_m/γ* by width "
            + ", ".join(f"{w}: {med(f'best_margin_m{w}') / med('gamma_star'):.3f}" for w in widths)
            + f"; frozen-feature control {med('control_ratio_lam_min'):.3f}")
        if failed:
            measured += "; failed: " + ", ".join(failed)
        return Verdict(not failed, measured, self.criterion, len(m), details={"checks": checks})

    # -- figure ----------------------------------------------------------------------
    def figure(self, results: Results):
        import matplotlib.pyplot as plt

        widths = list(results[0].config["widths"])
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        for j, w in enumerate(widths):
            for s, r in enumerate(results):
                ax1.plot(r.curves["lam"], r.curves[f"ratio_m{w}"], "o-", color=f"C{j}", alpha=0.6,
                         ms=3, label=f"m = {w}" if s == 0 else None)
        for s, r in enumerate(results):
            ax1.plot(r.curves["lam"], r.curves["control_ratio"], "x--", color="gray", alpha=0.6,
                     label="frozen first layer (m = %d)" % widths[-1] if s == 0 else None)
            ax1.plot(r.curves["lam"], r.curves["theory_ratio_bound"], ":", color="k", alpha=0.5,
                     label="global-minimizer bound" if s == 0 else None)
        ax1.axhline(1, color="k", lw=1)
        ax1.set(xscale="log", ylim=(-0.2, 1.05), xlabel="λ", ylabel="γ(Θ_λ) / γ*∞",
                title="normalized margin of argmin L_λ")
        ax1.legend(fontsize=7)
        for r in results:
            g = r.metrics["gamma_star"]
            ax2.plot(widths, [r.metrics[f"best_margin_m{w}"] / g for w in widths], "o-", alpha=0.6)
        ax2.axhline(1, color="k", lw=1, label="γ*∞ (cvxpy, certified)")
        ax2.set(xscale="log", xlabel="width m", ylabel="best γ_m / γ*∞ (over restarts and λ)",
                title="γ*_m vs width")
        ax2.set_xticks(widths, [str(w) for w in widths])
        ax2.minorticks_off()
        ax2.legend(fontsize=8)
        fig.tight_layout()
        return fig


CLAIM = RegularizedCEMaxMargin()
