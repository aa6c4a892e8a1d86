"""Over-specified students are easier to train: SGD fits a k0-neuron teacher when k ≫ k0.

Livni, Shalev-Shwartz, Shamir 2014 (Section 5, "over-specification"): training a network
of exactly the teacher's size is hard — SGD from random initialization stalls at poor
local minima or plateaus — while a larger network trained the same way reaches a much
lower training loss. Over-parametrization changes the landscape, not the data.

Setup: labels y = k0^{-1/2} Σ_j v_j relu(u_jᵀx) from a ReLU teacher (``data.teacher_student``,
x on the unit sphere, v_j = ±1); students f(x) = k^{-1/2} Σ_r a_r relu(w_rᵀx) with w_r ~ N(0, I)
and a fixed outer layer a_r = ±1 (as in Du et al. 2019 and Safran & Shamir 2018; the
student of width k ≥ k0 can represent the teacher exactly), trained by minibatch SGD on
the square loss. Every width is trained with each step size of a grid (same init and
minibatches) and judged at the step with its lowest median final loss, so that no width
is handicapped by a step size tuned for another. A seed is one teacher and data set,
shared by every width, so widths are compared on the same problems. Negative control:
the student of the teacher's own width k = k0.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from dltheory.claims.base import Claim, Outcome, Results, Verdict
from dltheory.data import teacher_student
from dltheory.engine import Sweep
from dltheory.errors import ConfigError
from dltheory.models import TwoLayer, seed_matmul

_PROFILES = {
    "smoke": dict(k0=10, widths=[5, 10, 20], d=5, n=200, batch=25, steps=4000, lrs=[2.0]),
    "quick": dict(k0=50, widths=[25, 50, 75, 100, 200], d=10, n=500, batch=50, steps=8000,
                  lrs=[2.0, 4.0]),
    "full": dict(k0=50, widths=[25, 50, 75, 100, 200], d=10, n=500, batch=50, steps=200_000,
                 lrs=[1.0, 2.0, 4.0]),
}
_SEEDS = {"smoke": 4, "quick": 6, "full": 32}

# Criterion constants, fixed before running (not tuned on results).
TOLERANCE = 1e-3  # success: train loss ≤ 0.1% of the label variance (mean (f−y)² / Var y)
RATE_GAP = 0.5  # "far more often": success rate at 2·k0 exceeds the rate at k0 by ≥ 1/2
PAIRED_WINS = 0.9  # on ≥ 90% of the seeds (same teacher, same data) 2·k0 ends lower than k0
_CHUNK = 1000  # SGD steps whose minibatch indices are drawn at once
_GATHER = 100  # SGD steps whose minibatches are gathered at once (memory: _GATHER·S·B·(d + 1))


class OverparamTeacherStudent(Claim):
    id = "overparam-teacher-student"
    title = "Over-specified students fit a ReLU teacher that same-size students do not"
    source = ("R. Livni, S. Shalev-Shwartz, O. Shamir, \"On the Computational Efficiency of "
              "Training Neural Networks\", NeurIPS 2014, Section 5; I. Safran, O. Shamir, "
              "\"Spurious Local Minima are Common in Two-Layer ReLU Neural Networks\", ICML 2018.")
    statement = ("Students trained by SGD on data from a two-layer ReLU teacher with k0 "
                 "neurons reach (near) zero training loss far more often when they have "
                 "more neurons than the teacher, and success grows with the width.")
    criterion = (
        f"Success = relative train loss mean (f−y)²/Var(y) ≤ {TOLERANCE:g} after the fixed SGD "
        f"budget, each width at the step size of the grid with its lowest median final loss. "
        f"The success rate at k = 2·k0 exceeds the rate of the control k = k0 by "
        f"≥ {RATE_GAP}; the rate is non-decreasing in k up to one seed of sampling slack "
        f"(rate(k') ≥ rate(k) − 1/#seeds for k' > k); and on ≥ {PAIRED_WINS:.0%} of the seeds "
        f"(same teacher and data) the 2·k0 student ends with a lower loss than the k0 student."
    )
    batched = True

    # -- setup -----------------------------------------------------------------------
    def sweep(self, profile: str) -> Sweep:
        base = dict(_PROFILES[profile])
        widths, lrs = base.pop("widths"), base.pop("lrs")
        return Sweep(Sweep.grid(base, {"width": widths, "lr": lrs}),
                     list(range(_SEEDS[profile])), profile, self.id)

    def validate(self, config: Mapping[str, Any]) -> None:
        for key in ("k0", "width", "d", "n", "batch", "steps"):
            if config[key] < 1:
                raise ConfigError(f"{key} must be >= 1 (got {config[key]})")
        if config["batch"] > config["n"]:
            raise ConfigError(f"batch ({config['batch']}) must be <= n ({config['n']})")
        if not 0 < config["lr"] <= 4:
            raise ConfigError(f"lr must be in (0, 4]: the loss is normalized by Var(y), so a "
                              f"stable step is O(1) (got {config['lr']})")

    # -- run -------------------------------------------------------------------------
    def run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        # Small matrices: intra-op threads cost more than they save.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._run_batch(config, seeds, device)
        finally:
            torch.set_num_threads(threads)

    def _problem(self, config: Mapping[str, Any], seed: int, device: str):
        """The seed's teacher and data: drawn from a generator that ignores the width, so
        every width of a seed trains on the same problem."""
        problem_config = {k: v for k, v in config.items() if k not in ("width", "lr")}
        return teacher_student(config["n"], config["d"], config["k0"], device=device,
                               generator=self.generator(problem_config, seed, device))

    def _run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        n, B, steps = config["n"], config["batch"], config["steps"]
        data = [self._problem(config, s, device) for s in seeds]
        X = torch.stack([t.X for t in data])  # (S, n, d)
        y = torch.stack([t.y for t in data])  # (S, n)
        Xy = torch.cat([X, y[..., None]], -1)  # rows (x_i, y_i): one gather a minibatch
        # Per seed, unbatched: a reduction's rounding may depend on how many rows it spans.
        var = torch.stack([t.y.var(correction=0) for t in data])[:, None]
        # The student's init and minibatch order ignore the step size: every lr of the grid
        # starts from the same weights and sees the same minibatches.
        drawn = {k: v for k, v in config.items() if k != "lr"}
        gens = [self.generator(drawn, s, device) for s in seeds]
        net = TwoLayer(config["d"], config["width"], generators=gens, train_outer=False,
                       device=device)
        W, a, scale = net.W.detach(), net.a, net.scale
        rows = torch.arange(len(seeds), device=device)[:, None]
        marks = sorted(set(np.unique(np.logspace(0, math.log10(steps), 30).astype(int)).tolist()))
        curve: list[list[float]] = [[] for _ in seeds]

        def predict(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(pre-activations, outputs); the output layer is a multiply + sum (a batched
            GEMV rounds differently for one seed than for several)."""
            h = seed_matmul(x, W.mT)  # (S, n, k)
            return h, scale * (torch.relu(h) * a[:, None, :]).sum(-1)

        def relative_loss() -> torch.Tensor:
            return ((predict(X)[1] - y) ** 2).mean(1) / var[:, 0]

        t = 0
        while t < steps:
            chunk = min(_CHUNK, steps - t)
            # Each seed draws its minibatches from its own generator (batch-invariant).
            idx = torch.stack([torch.randint(0, n, (chunk, B), generator=g, device=device)
                               for g in gens], dim=1)  # (chunk, S, B)
            for i in range(chunk):
                if i % _GATHER == 0:  # the next _GATHER minibatches in one gather: (·, S, B, d + 1)
                    batches = Xy[rows, idx[i:i + _GATHER]]
                x, target = batches[i % _GATHER, ..., :-1], batches[i % _GATHER, ..., -1]
                h, out = predict(x)
                # SGD on ½ mean_B (f − y)² / Var(y):  ∂/∂w_r = scale · a_r 1[w_rᵀx > 0] r x
                r = (out - target) / (var * B)
                G = (h > 0) * r[..., None] * a[:, None, :]  # (S, B, k)
                W.add_(seed_matmul(G.mT, x), alpha=-config["lr"] * scale)
                t += 1
                if t in marks:
                    for c, v in zip(curve, relative_loss().tolist()):
                        c.append(v)
        final = relative_loss().tolist()
        return [Outcome({"train_loss": loss, "success": bool(loss <= TOLERANCE),
                         "width": config["width"], "k0": config["k0"]},
                        {"t": marks, "train_loss": c}, diverged=not math.isfinite(loss))
                for loss, c in zip(final, curve)]

    # -- judge -----------------------------------------------------------------------
    @staticmethod
    def best_lr(results: Results) -> dict[int, Any]:
        """Per width, the step size of the grid with the lowest median final loss (every
        width, the control included, gets its best step of the same grid)."""
        best = {}
        for k in sorted({r.config["width"] for r in results}):
            runs = results.where(width=k)
            lrs = sorted({r.config.get("lr") for r in runs}, key=lambda v: (v is None, v))
            best[k] = min(lrs, key=lambda lr: float(np.median(
                [r.metrics["train_loss"] for r in runs if r.config.get("lr") == lr])))
        return best

    def judge(self, results: Results) -> Verdict:
        k0 = results[0].config["k0"]
        widths = sorted({r.config["width"] for r in results})
        lr = self.best_lr(results)
        by_width = {k: {r.seed: r.metrics for r in results.where(width=k)
                        if r.config.get("lr") == lr[k]} for k in widths}
        rate = {k: float(np.mean([m["success"] for m in by_width[k].values()])) for k in widths}
        median = {k: float(np.median([m["train_loss"] for m in by_width[k].values()]))
                  for k in widths}
        if k0 not in rate or 2 * k0 not in rate:
            return Verdict(False, f"widths {widths} lack the control k0={k0} or 2·k0",
                           self.criterion, len(results))
        paired = [s for s in by_width[k0] if s in by_width[2 * k0]]
        wins = float(np.mean([by_width[2 * k0][s]["train_loss"] < by_width[k0][s]["train_loss"]
                              for s in paired])) if paired else 0.0
        checks = {
            "2·k0 succeeds far more often than k0": rate[2 * k0] - rate[k0] >= RATE_GAP,
            "success monotone in width": all(
                rate[hi] >= rate[lo] - 1 / len(by_width[lo])
                for i, lo in enumerate(widths) for hi in widths[i + 1:]),
            "2·k0 ends lower than k0 on the same data": wins >= PAIRED_WINS,
        }
        failed = [k for k, ok in checks.items() if not ok]
        measured = ("success rate by width: " + ", ".join(f"k={k}: {rate[k]:.2f}" for k in widths)
                    + "; median train loss: " + ", ".join(f"k={k}: {median[k]:.2g}" for k in widths)
                    + f"; 2·k0 lower than k0 on {wins:.0%} of {len(paired)} seeds"
                    + ("; best step of the grid: " + ", ".join(f"k={k}: {lr[k]:g}" for k in widths)
                       if any(v is not None for v in lr.values()) else ""))
        if failed:
            measured += "; failed: " + ", ".join(failed)
        return Verdict(not failed, measured, self.criterion, len(results),
                       details={"checks": checks, "success_rate": rate, "median_loss": median,
                                "paired_wins": wins, "best_lr": lr})

    # -- figure ----------------------------------------------------------------------
    def figure(self, results: Results):
        import matplotlib.pyplot as plt

        k0 = results[0].config["k0"]
        widths = sorted({r.config["width"] for r in results})
        lr = self.best_lr(results)
        results = Results(r for r in results if r.config.get("lr") == lr[r.config["width"]])
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
        losses = {k: np.log10([max(r.metrics["train_loss"], 1e-16)
                               for r in results.where(width=k)]) for k in widths}
        bins = np.linspace(min(map(min, losses.values())), max(map(max, losses.values())), 25)
        for i, k in enumerate(widths):
            ax1.hist(losses[k], bins=bins, alpha=0.55, color=f"C{i}", label=f"k={k}")
            curves = np.array([r.curves["train_loss"] for r in results.where(width=k)])
            ax2.plot(results.where(width=k)[0].curves["t"], np.median(curves, axis=0),
                     color=f"C{i}", label=f"k={k}, η={lr[k]:g}"
                     + (" (k0, control)" if k == k0 else ""))
        ax1.axvline(math.log10(TOLERANCE), color="k", ls="--", label="tolerance")
        ax1.set(xlabel="log10 final train loss / Var(y)", ylabel="seeds",
                title=f"final loss per student width (teacher k0={k0})")
        ax1.legend(fontsize=8)
        ax2.axhline(TOLERANCE, color="k", ls="--")
        ax2.set(xscale="log", yscale="log", xlabel="SGD step", ylabel="train loss / Var(y)",
                title="median training curve")
        ax2.legend(fontsize=8)
        fig.tight_layout()
        return fig


CLAIM = OverparamTeacherStudent()
