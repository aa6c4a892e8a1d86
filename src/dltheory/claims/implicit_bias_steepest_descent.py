"""Steepest descent w.r.t. a norm converges to that norm's max-margin separator.

Gunasekar, Lee, Soudry, Srebro, "Characterizing Implicit Bias in Terms of Optimization
Geometry", ICML 2018, Theorem 5: on linearly separable data, steepest descent w.r.t. any
norm ‖·‖ on the exponential loss L(w) = Σ_i exp(−y_i⟨w, x_i⟩), with steps
η_t ≤ 1/(B² L(w_t)), B = max_i ‖x_i‖_*, has

    lim_t  min_i y_i⟨w_t, x_i⟩ / ‖w_t‖  =  γ* := max_{‖w‖ ≤ 1} min_i y_i⟨w, x_i⟩,

the max-margin in *that* norm. ℓ2 gives gradient descent (the ℓ2 SVM, Soudry et al. 2018),
ℓ1 gives greedy coordinate descent (boosting: the ℓ1 SVM), ℓ∞ sign descent (the ℓ∞ SVM).

Setup: Gaussian data with more dimensions than points (n < d), where the ℓ1, ℓ2, ℓ3, ℓ∞ SVMs
point in clearly different directions; the SVMs from cvxpy with their KKT conditions checked.
Each norm's run takes the theorem's largest step η_t = 1/(B² L(w_t)), so the update only
needs the loss-normalized gradient ∇L/L = −Σ_i softmax(−m)_i y_i x_i, which never underflows.
All seeds run batched (float64).

The theorem is about the margin; ℓ1 and ℓ∞ max-margin problems are linear programs whose
solution set need not be a single direction, so the direction gap ‖w_t/‖w_t‖ − ŵ/‖ŵ‖‖ is
reported, not required to vanish. The control is the cross-table: each run must be closer
to its own norm's SVM than to the other norms', and have the best margin in its own norm.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from dltheory.claims._implicit_bias import (
    NORMS,
    dual_exponent,
    log_checkpoints,
    norm_exponent,
    pad_to_simd,
)
from dltheory.claims.base import Claim, Outcome, Results, Verdict
from dltheory.engine import Sweep
from dltheory.errors import ConfigError
from dltheory.reference import max_margin

_NORMS = ["l1", "l2", "linf", "l3"]
_PROFILES = {
    "smoke": dict(n=10, d=30, steps=2_000, lr_scale=1.0, norms=_NORMS, checkpoints=20),
    "quick": dict(n=20, d=40, steps=50_000, lr_scale=1.0, norms=_NORMS, checkpoints=40),
    "full": dict(n=50, d=100, steps=2_000_000, lr_scale=1.0, norms=_NORMS, checkpoints=60),
}
_SEEDS = {"smoke": 3, "quick": 8, "full": 32}
_LATE = 10  # "late" = the last decade of steps, [T/10, T]


def steepest_step(g: torch.Tensor, p: float) -> torch.Tensor:
    r"""``‖g‖_* argmax_{‖u‖_p ≤ 1} ⟨u, g⟩`` row by row, for a batch ``g`` of shape (S, 1, d).

    The batched form of :func:`dltheory.optim.steepest_direction` (Gunasekar et al. 2018,
    eq. 9): ℓ2 → g; ℓ1 → the largest |g_j| coordinate only; ℓ∞ → ‖g‖₁ sign g; ℓp →
    ‖g‖_q^{2−q} sign(g)|g|^{q−1}. Reductions run over the contiguous last axis.
    """
    if p == 2:
        return g
    if p == 1:
        j = g.abs().argmax(-1, keepdim=True)
        return torch.zeros_like(g).scatter_(-1, j, g.gather(-1, j))
    if math.isinf(p):
        return g.abs().sum(-1, keepdim=True) * torch.sign(g)
    q = dual_exponent(p)
    # ‖g‖_q^{2−q} = (Σ|g_j|^q)^{(2−q)/q}: one power per seed, taken on a row padded to a vector
    # block so that it runs through the vectorized pow whatever the number of seeds (pad_to_simd)
    total = pad_to_simd((g.abs() ** q).sum(-1, keepdim=True), -1, value=1.0)
    return (total ** ((2 - q) / q))[..., :1] * torch.sign(g) * g.abs() ** (q - 1)


def ascend(Z, Zt, padded_rows, w, scale, p: float) -> None:
    """One steepest-descent step in ℓp on the exponential loss, in place on ``w`` (S, 1, d):
    ``w += η_t ‖g‖_* argmax_{‖u‖_p ≤ 1} ⟨u, g⟩`` with ``g = −∇L/L = Σ softmax(−m)_i z_i``.

    Z (S, n, d) holds the rows y_i x_i, Zt its transpose, ``padded_rows`` (1, 1, n) is +∞ on
    padded rows (weight exp(−∞) = 0), ``scale`` (S, 1, 1) is η_t·L(w_t) per seed. Products are
    broadcast multiplies and sums over the contiguous last axis, whose rounding does not
    depend on the number of seeds; no host sync.
    """
    m = (Z * w).sum(2)[:, None, :] + padded_rows  # (S, 1, n) margins
    weight = torch.exp(m.amin(2, keepdim=True) - m)  # ∝ softmax(−m)
    g = (Zt * weight).sum(2)[:, None, :] / weight.sum(2, keepdim=True)
    w.add_(scale * steepest_step(g, p))


def _margin(Z: np.ndarray, w: np.ndarray, p: float) -> float:
    """The ℓp margin min_i y_i⟨w, x_i⟩ / ‖w‖_p (rows of Z are y_i x_i)."""
    return float((Z @ w).min() / np.linalg.norm(w, ord=p))


def _unit(w: np.ndarray) -> np.ndarray:
    return w / np.linalg.norm(w)


class ImplicitBiasSteepestDescent(Claim):
    id = "implicit-bias-steepest-descent"
    title = "Steepest descent w.r.t. a norm → that norm's max-margin separator"
    source = ("S. Gunasekar, J. D. Lee, D. Soudry, N. Srebro, \"Characterizing Implicit Bias in "
              "Terms of Optimization Geometry\", ICML 2018, Theorem 5.")
    statement = ("On separable data, steepest descent w.r.t. a norm on the exponential loss, with "
                 "steps η_t ≤ 1/(B²L(w_t)), converges to the max-margin in that norm: "
                 "min_i y_i⟨w_t, x_i⟩/‖w_t‖ → max_{‖w‖≤1} min_i y_i⟨w, x_i⟩.")
    criterion = (
        "For every seed and each norm p ∈ {ℓ1, ℓ2, ℓ∞, ℓ3}: the margin gap 1 − γ_p(w_t)/γ_p* "
        "still shrinks over the last decade [T/10, T] (or is already below 1e-6) and never goes "
        "negative (a check on the reference); the ℓp-trained run has a larger ℓp margin than "
        "the runs trained in the other norms (column of the margin table), its ℓp margin ratio "
        "is its best over the norms (row), and its direction w_T/‖w_T‖₂ is closer to the ℓp SVM "
        "direction than to any other norm's SVM direction (the control: the other norms' runs "
        "end elsewhere)."
    )
    batched = True

    def sweep(self, profile: str) -> Sweep:
        return Sweep([dict(_PROFILES[profile])], list(range(_SEEDS[profile])), profile, self.id)

    def validate(self, config: Mapping[str, Any]) -> None:
        if config["n"] < 2 or config["d"] < 2:
            raise ConfigError(f"n and d must be >= 2 (got n={config['n']}, d={config['d']})")
        if config["steps"] < 100:
            raise ConfigError(f"steps must be >= 100 (got {config['steps']})")
        if not 0 < config["lr_scale"] <= 1:
            raise ConfigError(f"lr_scale must be in (0, 1]: Theorem 5 needs η_t ≤ 1/(B²L(w_t)) "
                              f"(got {config['lr_scale']})")
        unknown = [k for k in config["norms"] if k not in NORMS]
        if unknown or len(set(config["norms"])) < 2:
            raise ConfigError(f"norms must be >= 2 distinct names among {', '.join(NORMS)} "
                              f"(got {config['norms']})")

    # -- run -------------------------------------------------------------------------
    def run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        # The matrices are tiny (n×d per seed): intra-op threads cost more than they save.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._run_batch(config, seeds, device)
        finally:
            torch.set_num_threads(threads)

    def _data(self, config, seed):
        """Gaussian points labelled by a random hyperplane; with n < d always separable."""
        g = self.generator(config, seed)
        X = torch.randn(config["n"], config["d"], generator=g, dtype=torch.float64)
        y = torch.sign(X @ torch.randn(config["d"], generator=g, dtype=torch.float64))
        return X, torch.where(y == 0, 1.0, y)

    def _run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        names = list(config["norms"])
        ps = [norm_exponent(k) for k in names]
        data = [self._data(config, s) for s in seeds]
        Zs = [(y[:, None] * X).numpy() for X, y in data]
        svms = [{k: max_margin(X, y, norm=p) for k, p in zip(names, ps)} for X, y in data]
        # The data are drawn (and the SVMs solved) on the host, then the runs go to `device`.
        # Padded rows get margin +∞ (weight exp(−∞) = 0), padded columns are zero.
        Z = pad_to_simd(pad_to_simd(torch.stack([y[:, None] * X for X, y in data]), 2), 1).to(device)
        Zt = Z.transpose(1, 2).contiguous()  # (S, d, n)
        padded_rows = pad_to_simd(torch.zeros(1, 1, config["n"], dtype=torch.float64, device=device),
                                  2, value=math.inf)
        w = {k: torch.zeros(len(seeds), 1, Z.shape[2], dtype=torch.float64, device=device)
             for k in names}
        # η_t = lr_scale/(B² L(w_t)), B = max_i ‖x_i‖_* (dual norm), per seed.
        scale = {k: torch.tensor([config["lr_scale"] / float(
            torch.linalg.vector_norm(X, ord=dual_exponent(p), dim=1).max()) ** 2 for X, _ in data],
            dtype=torch.float64, device=device)[:, None, None] for k, p in zip(names, ps)}
        marks = log_checkpoints(config["steps"], config["checkpoints"])
        curves = [{"t": [], **{f"{k}_{c}": [] for k in names for c in ("margin_gap", "direction_gap")}}
                  for _ in seeds]
        t = 0
        for mark in marks:
            for _ in range(mark - t):
                for k, p in zip(names, ps):
                    ascend(Z, Zt, padded_rows, w[k], scale[k], p)
            t = mark
            host = {k: w[k][:, 0].cpu().numpy() for k in names}  # one copy per checkpoint
            for i, (Zi, svm) in enumerate(zip(Zs, svms)):
                curves[i]["t"].append(t)
                for k, p in zip(names, ps):
                    wi = host[k][i, :Zi.shape[1]]
                    curves[i][f"{k}_margin_gap"].append(1 - _margin(Zi, wi, p) / svm[k].margin)
                    curves[i][f"{k}_direction_gap"].append(
                        float(np.linalg.norm(_unit(wi) - _unit(svm[k].w))))
        return [self._summarize(names, ps, Zs[i], svms[i],
                                {k: host[k][i, :Zs[i].shape[1]] for k in names}, curves[i])
                for i in range(len(seeds))]

    def _summarize(self, names, ps, Z, svm, w, c) -> Outcome:
        t = c["t"]
        i_late = next(i for i, s in enumerate(t) if s >= t[-1] / _LATE)
        metrics: dict[str, Any] = {"svm_kkt_residual": max(s.kkt_residual for s in svm.values())}
        for k in names:
            metrics[f"{k}_margin_gap_T"] = c[f"{k}_margin_gap"][-1]
            metrics[f"{k}_margin_gap_T_over_10"] = c[f"{k}_margin_gap"][i_late]
            metrics[f"{k}_min_margin_gap"] = min(c[f"{k}_margin_gap"])
            metrics[f"{k}_direction_gap_T"] = c[f"{k}_direction_gap"][-1]
            for r, p in zip(names, ps):  # the cross-tables: run k measured against norm r
                metrics[f"{k}_margin_ratio_in_{r}"] = _margin(Z, w[k], p) / svm[r].margin
                metrics[f"{k}_distance_to_{r}"] = float(np.linalg.norm(_unit(w[k]) - _unit(svm[r].w)))
        diverged = not all(np.isfinite(v).all() for v in w.values())
        return Outcome(metrics, c, diverged=diverged)

    # -- judge -----------------------------------------------------------------------
    def judge(self, results: Results) -> Verdict:
        if not results:
            return Verdict.nothing_to_judge(self.criterion)
        names = list(results[0].config.get("norms", _NORMS))
        m = [r.metrics for r in results]
        others = {k: [r for r in names if r != k] for k in names}
        checks = {
            "margin gap still shrinking": all(
                x[f"{k}_margin_gap_T"] < x[f"{k}_margin_gap_T_over_10"] or x[f"{k}_margin_gap_T"] < 1e-6
                for x in m for k in names),
            "margin ≤ SVM margin": all(x[f"{k}_min_margin_gap"] >= -1e-9 for x in m for k in names),
            "best margin in its own norm (column)": all(
                x[f"{k}_margin_ratio_in_{k}"] > x[f"{r}_margin_ratio_in_{k}"]
                for x in m for k in names for r in others[k]),
            "own norm is its best ratio (row)": all(
                x[f"{k}_margin_ratio_in_{k}"] > x[f"{k}_margin_ratio_in_{r}"]
                for x in m for k in names for r in others[k]),
            "closest to its own SVM": all(
                x[f"{k}_distance_to_{k}"] < x[f"{k}_distance_to_{r}"]
                for x in m for k in names for r in others[k]),
        }
        med = {k: float(np.median([x[f"{k}_margin_gap_T"] for x in m])) for k in names}
        dist = {k: float(np.median([x[f"{k}_direction_gap_T"] for x in m])) for k in names}
        nearest_other = {k: float(np.median([min(x[f"{k}_distance_to_{r}"] for r in others[k])
                                             for x in m])) for k in names}
        failed = [k for k, ok in checks.items() if not ok]
        measured = (f"median over {len(m)} seeds, at T: margin gap 1−γ/γ* " +
                    ", ".join(f"{k} {med[k]:.2g}" for k in names) +
                    "; distance to own SVM direction vs nearest other norm's: " +
                    ", ".join(f"{k} {dist[k]:.2g} vs {nearest_other[k]:.2g}" for k in names))
        if failed:
            measured += "; failed: " + ", ".join(failed)
        return Verdict(not failed, measured, self.criterion, len(m),
                       details={"checks": checks, "margin_gap": med, "direction_gap": dist,
                                "nearest_other_svm": nearest_other})

    # -- figure ----------------------------------------------------------------------
    def figure(self, results: Results):
        import matplotlib.pyplot as plt

        names = list(results[0].config.get("norms", _NORMS))
        fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4))
        for j, k in enumerate(names):
            for s, r in enumerate(results):
                gap = np.maximum(np.array(r.curves[f"{k}_margin_gap"], dtype=float), 1e-16)
                ax1.plot(r.curves["t"], gap, color=f"C{j}", alpha=0.5, label=k if s == 0 else None)
        ax1.set(xscale="log", yscale="log", xlabel="step t", ylabel="1 − γ_p(w_t)/γ_p*",
                title="margin gap in the run's own norm")
        ax1.legend(fontsize=8)
        for ax, key, title, cmap in (
                (ax2, "margin_ratio_in", "γ_col(w_row) / γ_col*  (median)", "viridis"),
                (ax3, "distance_to", "‖u_row − û_col‖₂  (median)", "viridis_r")):
            table = np.array([[np.median([r.metrics[f"{k}_{key}_{c}"] for r in results])
                               for c in names] for k in names])
            ax.imshow(table, cmap=cmap)
            for a in range(len(names)):
                for b in range(len(names)):
                    ax.text(b, a, f"{table[a, b]:.3f}", ha="center", va="center", fontsize=8,
                            color="w" if (table[a, b] < table.mean()) == (cmap == "viridis") else "k")
            ax.set(xticks=range(len(names)), xticklabels=[f"{c} SVM" for c in names],
                   yticks=range(len(names)), yticklabels=[f"{k} run" for k in names], title=title)
        fig.tight_layout()
        return fig


CLAIM = ImplicitBiasSteepestDescent()
