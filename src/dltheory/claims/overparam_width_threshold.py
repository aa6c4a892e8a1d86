"""How many parameters does gradient descent need to fit n points? p*(n) on real data.

The over-parametrization theorems (Du, Zhai, Póczos, Singh 2019; Allen-Zhu, Li, Song 2019)
prove that GD drives the training loss of a two-layer ReLU net to zero once the width is
m = poly(n) — m = Ω(n⁶/λ₀⁴) in Du et al., O(n⁴L²)-type in the talk's summary — while "very
unrigorous calculations suggest p = constant × n suffices" (p the parameter count: a net
with p ≳ n parameters has as many unknowns as equations). This claim measures the smallest
width that GD actually needs.

Setup: n points of scikit-learn's digits (``data.digits``: centred, projected on the top d
principal components, unit norm), labelled ±1 either by the real class (digit ≥ 5) or at
random (Zhang et al. 2017's memorization test, where nothing but capacity fits the labels).
For every width m in a geometric grid ≈ 2^(k/2) a two-layer ReLU net f(x) = m^{-1/2} Σ_r a_r
relu(w_rᵀx) (both layers trained, p = m(d+1) parameters, ``models.TwoLayer``) runs full-batch
GD on ½·mean (f − y)² with one fixed step size and step budget. "Zero training loss" is
fixed as: at a check (every 100 steps) within the budget every training point has margin
y_i f(x_i) ≥ 1/2. The
threshold m*(n) is the smallest width in the grid that does this; p* = m*(d+1). The fit
log p* = b log n + c over seeds and sample sizes gives the exponent b with a 95% interval,
to compare with 1 (p = c·n) and 4 (the theory's n⁴). Random labels are the claim; real
labels are the negative control: structure, not capacity, fits them, so they must need far
fewer parameters.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from scipy import stats

from dltheory.claims.base import Claim, Outcome, Results, Verdict
from dltheory.data import digits
from dltheory.data.digits import N_DIGITS, PIXELS
from dltheory.engine import Sweep
from dltheory.errors import ConfigError
from dltheory.models import TwoLayer, seed_matmul

_GRID = [1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 91, 128, 181, 256, 362, 512, 724, 1024]  # ≈ 2^(k/2)
_PROFILES = {
    "smoke": dict(d=64, ns=[32, 64], widths=_GRID[:9], steps=400, lr=8.0),
    "quick": dict(d=64, ns=[64, 128, 256], widths=_GRID[:14], steps=2000, lr=8.0),
    "full": dict(d=64, ns=[128, 256, 512, 1024, 1600], widths=_GRID, steps=20_000, lr=8.0),
}
_SEEDS = {"smoke": 2, "quick": 4, "full": 8}
LABELS = ("random", "real")

# Criterion constants, fixed from the statement before any run (not tuned on results).
MARGIN = 0.5  # "zero training loss": every y_i f(x_i) >= 1/2 at the end of the budget
LINEAR = 1.0  # the talk's heuristic: p* = c·n
THEORY = 4.0  # the theorem's width n⁴ (p* ∝ n⁴ at fixed d)
SLACK = 0.5  # random labels: |b − 1| <= 1/2
CONTROL_RATIO = 4.0  # real labels need >= 4x fewer parameters than random ones at the largest n
_CHECK_EVERY = 100  # steps between success checks (a host sync); a seed leaves the batch once it fits


class OverparamWidthThreshold(Claim):
    id = "overparam-width-threshold"
    title = "The width GD needs to fit n points: fitted exponent of p*(n) vs n and n⁴"
    source = ("S. S. Du, X. Zhai, B. Póczos, A. Singh, \"Gradient Descent Provably Optimizes "
              "Over-parameterized Neural Networks\", ICLR 2019; C. Zhang, S. Bengio, M. Hardt, "
              "B. Recht, O. Vinyals, \"Understanding deep learning requires rethinking "
              "generalization\", ICLR 2017; the talk's remark that p = constant × n suffices.")
    statement = ("GD reaches zero training loss on n randomly labelled points once the "
                 "parameter count p is about a constant times n, far below the poly(n) "
                 "(m = O(n⁴)) widths the convergence theorems need; real labels need fewer.")
    criterion = (
        f"Fit = every train margin y f(x) >= {MARGIN} after the fixed GD budget; m* = smallest "
        f"fitting width of the grid, p* = m*(d+1). Random labels: every run fits within the "
        f"grid, and the OLS exponent b of log p* on log n has |b − {LINEAR:g}| <= {SLACK} and a "
        f"95% interval excluding {THEORY:g}. Control, real labels: median p* at the largest n is "
        f">= {CONTROL_RATIO:g}x smaller than with random labels."
    )
    batched = True

    # -- setup -----------------------------------------------------------------------
    def sweep(self, profile: str) -> Sweep:
        base = dict(_PROFILES[profile])
        ns = base.pop("ns")
        return Sweep(Sweep.grid(base, {"n": ns, "labels": list(LABELS)}),
                     list(range(_SEEDS[profile])), profile, self.id)

    def validate(self, config: Mapping[str, Any]) -> None:
        if config["labels"] not in LABELS:
            raise ConfigError(f"labels must be one of {', '.join(LABELS)} (got {config['labels']!r})")
        if not 1 <= config["d"] <= PIXELS:
            raise ConfigError(f"d must be in [1, {PIXELS}] (got {config['d']})")
        if not 2 <= config["n"] <= N_DIGITS:
            raise ConfigError(f"n must be in [2, {N_DIGITS}]: the digits set has {N_DIGITS} "
                              f"images (got {config['n']})")
        widths = config["widths"]
        if not widths or any(w < 1 for w in widths) or list(widths) != sorted(set(widths)):
            raise ConfigError(f"widths must be increasing positive integers (got {widths})")
        if config["steps"] < 1:
            raise ConfigError(f"steps must be >= 1 (got {config['steps']})")
        if not 0 < config["lr"] <= 10:
            raise ConfigError(f"lr must be in (0, 10] (got {config['lr']})")

    # -- run -------------------------------------------------------------------------
    def run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small matrices: intra-op threads cost more than they save
        try:
            return self._run_batch(config, seeds, device)
        finally:
            torch.set_num_threads(threads)

    def _data(self, config: Mapping[str, Any], gen: torch.Generator, device: str):
        """n digits drawn without replacement, labelled ±1 by class (>= 5) or at random."""
        X, digit = digits(config["d"], device=device)
        idx = torch.randperm(N_DIGITS, generator=gen, device=device)[:config["n"]]
        if config["labels"] == "real":
            y = (digit[idx] >= 5).to(X.dtype) * 2 - 1
        else:
            y = torch.randint(0, 2, (config["n"],), generator=gen, device=device).to(X.dtype) * 2 - 1
        return X[idx], y

    def _run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        gens = [self.generator(config, s, device) for s in seeds]
        data = [self._data(config, g, device) for g in gens]
        X, y = torch.stack([x for x, _ in data]), torch.stack([t for _, t in data])  # (S,n,d), (S,n)
        fits: dict[int, dict[int, bool]] = {}  # width → seed → fit (seeds that trained it)
        steps_used: dict[int, dict[int, int]] = {}
        final_loss: dict[int, dict[int, float]] = {}
        # Ascending widths, each trained by the seeds that have not fit yet: m* is the
        # smallest fitting width, so a seed trains no wider net (its curve entries are None),
        # as alone. Each width's nets come from those seeds' generators in grid order.
        active = list(range(len(seeds)))
        for m in config["widths"]:
            net = TwoLayer(config["d"], m, generators=[gens[k] for k in active], device=device)
            fit, used, loss = _train(net, X[active], y[active], config["steps"], config["lr"])
            fits[m], steps_used[m], final_loss[m] = (dict(zip(active, v)) for v in (fit, used, loss))
            active = [k for k in active if not fits[m][k]]
            if not active:
                break
        outcomes = []
        for k in range(len(seeds)):
            fitting = [m for m in fits if fits[m].get(k)]
            m_star = fitting[0] if fitting else None
            # A seed's curves end at its own m* (what it would have trained alone).
            mine = [m for m in config["widths"] if m in fits and (m_star is None or m <= m_star)]
            outcomes.append(Outcome(
                {"n": config["n"], "labels": config["labels"], "d": config["d"],
                 "m_star": m_star, "p_star": m_star * (config["d"] + 1) if m_star else None,
                 "censored_low": m_star == config["widths"][0]},
                {"width": list(config["widths"]),
                 "fit": [float(fits[m][k]) if m in mine else None for m in config["widths"]],
                 "final_loss": [final_loss[m][k] if m in mine else None for m in config["widths"]],
                 "steps": [steps_used[m][k] if m in mine else None for m in config["widths"]]}))
        return outcomes

    # -- judge -----------------------------------------------------------------------
    def judge(self, results: Results) -> Verdict:
        fits = {lab: _exponent(results.where(labels=lab)) for lab in LABELS}
        rnd = fits["random"]
        n_max = max(r.config["n"] for r in results)
        p_max = {lab: _median_p(results.where(labels=lab, n=n_max)) for lab in LABELS}
        checks = {
            "random labels fit within the width grid": rnd["censored"] == 0 and rnd["runs"] > 0,
            "random-label exponent near 1": (math.isfinite(rnd["b"])
                                             and abs(rnd["b"] - LINEAR) <= SLACK),
            "random-label interval excludes 4": math.isfinite(rnd["hi"]) and rnd["hi"] < THEORY,
            "real labels need fewer parameters": p_max["real"] * CONTROL_RATIO <= p_max["random"],
        }
        failed = [k for k, ok in checks.items() if not ok]
        measured = "; ".join(
            f"{lab} labels: p* ∝ n^{f['b']:.2f} (95% CI {f['lo']:.2f}..{f['hi']:.2f}), median p*/n "
            + ", ".join(f"n={n}: {v:.2f}" for n, v in f["ratio"].items())
            + (f", {f['censored']} runs unfit at the widest net" if f["censored"] else "")
            for lab, f in fits.items())
        measured += (f"; at n={n_max} p* random {p_max['random']:g} vs real {p_max['real']:g} "
                     f"(theory exponent {THEORY:g}, heuristic {LINEAR:g})")
        if failed:
            measured += "; failed: " + ", ".join(failed)
        return Verdict(not failed, measured, self.criterion, len(results),
                       details={"checks": checks, "fits": fits, "p_star_at_n_max": p_max})

    # -- figure ----------------------------------------------------------------------
    def figure(self, results: Results):
        import matplotlib.pyplot as plt

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
        for i, lab in enumerate(LABELS):
            runs = [r for r in results.where(labels=lab) if r.metrics["p_star"]]
            if not runs:
                continue
            n = np.array([r.config["n"] for r in runs], dtype=float)
            p = np.array([r.metrics["p_star"] for r in runs], dtype=float)
            ax1.scatter(n, p, color=f"C{i}", alpha=0.6, label=f"{lab} labels")
            f = _exponent(results.where(labels=lab))
            if math.isfinite(f["b"]):
                grid = np.geomspace(n.min(), n.max(), 20)
                ax1.plot(grid, np.exp(f["c"]) * grid ** f["b"], color=f"C{i}",
                         label=f"fit n^{f['b']:.2f}")
        ns = sorted({r.config["n"] for r in results})
        ax1.plot(ns, ns, "k--", label="p = n")
        ax1.set(xscale="log", yscale="log", xlabel="n (training points)",
                ylabel="p* (parameters at the fitting threshold)", title="threshold vs n")
        ax1.legend(fontsize=8)
        for i, lab in enumerate(LABELS):
            ratio = _exponent(results.where(labels=lab))["ratio"]
            ax2.plot(list(ratio), list(ratio.values()), marker="o", color=f"C{i}", label=f"{lab} labels")
        ax2.set(xscale="log", yscale="log", xlabel="n", ylabel="median p*/n",
                title="parameters per training point at the threshold")
        ax2.legend(fontsize=8)
        fig.tight_layout()
        return fig


def _train(net: TwoLayer, X: torch.Tensor, y: torch.Tensor, steps: int, lr: float):
    """Full-batch GD on ½·mean (f − y)² for every seed of ``net`` at once. Every
    ``_CHECK_EVERY`` steps the seeds that fit leave the batch, their record taken then (what
    each would get alone: every product is batch-invariant); the rest go on, to ``steps``.
    Returns per seed: fit (all margins >= MARGIN), steps used, loss at that step."""
    W, a, scale = net.W.detach().clone(), net.a.detach().clone(), net.scale
    S = W.shape[0]
    fit, used, loss = [False] * S, [steps] * S, [math.nan] * S
    rows = list(range(S))  # the seeds still training, in batch order

    def predict(W, a):
        # GEMMs through seed_matmul, contractions with a vector as broadcast-multiply + sum
        # over the last axis: a plain batched GEMM's or GEMV's rounding depends on the
        # number of seeds, these do not.
        h = seed_matmul(X, W.mT)  # (S, n, m)
        return h, scale * (torch.relu(h) * a[:, None, :]).sum(-1)

    for t in range(1, steps + 1):
        h, out = predict(W, a)
        r = (out - y) / y.shape[1]  # ∂L/∂f
        # ∂L/∂a_r = scale Σ_i r_i relu(h_ir);  ∂L/∂w_r = scale a_r Σ_i r_i 1[h_ir > 0] x_i
        grad_a = scale * (torch.relu(h).mT * r[:, None, :]).sum(-1)
        grad_W = scale * seed_matmul(((h > 0) * r[..., None] * a[:, None, :]).mT, X)
        a = a - lr * grad_a
        W = W - lr * grad_W
        if t % _CHECK_EVERY == 0 or t == steps:
            out = predict(W, a)[1]
            now = (torch.isfinite(out).all(1) & ((y * out).amin(1) >= MARGIN)).tolist()
            for j, k in enumerate(rows):
                if now[j] or t == steps:
                    # Per seed: a reduction's rounding may depend on how many rows it spans.
                    done = torch.nan_to_num(0.5 * ((out[j] - y[j]) ** 2).mean(), nan=math.inf)
                    fit[k], used[k], loss[k] = now[j], t, float(done)  # diverged: not fit
            keep = [j for j, ok in enumerate(now) if not ok]
            if not keep:
                break
            if len(keep) < len(rows):
                rows = [rows[j] for j in keep]
                W, a, X, y = W[keep], a[keep], X[keep], y[keep]
    return fit, used, loss


def _median_p(runs: Results) -> float:
    """Median p* over seeds (an unfit run counts as +inf)."""
    ps = [r.metrics["p_star"] if r.metrics["p_star"] else math.inf for r in runs]
    return float(np.median(ps)) if ps else math.nan


def _exponent(runs: Results) -> dict[str, Any]:
    """OLS of log p* on log n over the fitted runs: slope b, intercept c, 95% t-interval."""
    fitted = [r for r in runs if r.metrics["p_star"]]
    ns = sorted({r.config["n"] for r in runs})
    ratio = {n: _median_p(runs.where(n=n)) / n for n in ns}
    out = {"b": math.nan, "c": math.nan, "lo": math.nan, "hi": math.nan, "runs": len(runs),
           "censored": len(runs) - len(fitted), "ratio": ratio}
    if len({r.config["n"] for r in fitted}) < 2:
        return out
    x = np.log([r.config["n"] for r in fitted])
    z = np.log([r.metrics["p_star"] for r in fitted])
    fit = stats.linregress(x, z)
    half = stats.t.ppf(0.975, len(x) - 2) * fit.stderr if len(x) > 2 else math.inf
    out.update(b=float(fit.slope), c=float(fit.intercept), lo=float(fit.slope - half),
               hi=float(fit.slope + half))
    return out


CLAIM = OverparamWidthThreshold()
