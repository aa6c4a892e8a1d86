"""Gradient descent on separable data converges in direction to the ℓ2 max-margin separator.

Soudry, Hoffer, Nacson, Gunasekar, Srebro, "The Implicit Bias of Gradient Descent on
Separable Data", JMLR 19(70), 2018, Theorem 3: for the logistic (or exponential) loss on
linearly separable data and a small enough step, w_t = ŵ log t + ρ_t with ρ_t bounded
(almost every dataset), where ŵ solves min ‖w‖² s.t. y_i⟨w, x_i⟩ ≥ 1. Hence ‖w_t‖ grows like
‖ŵ‖ log t and the direction gap ‖w_t/‖w_t‖ − ŵ/‖ŵ‖‖ falls like 1/log t.

Setup: separable Gaussian data through the origin (no bias term), ŵ from cvxpy with its
KKT conditions checked. All seeds of a config run as one batched computation (float64).
Negative control: the same GD on the square loss with targets y_i, whose limit is the
least-squares solution (a closed form), not the max-margin direction.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from dltheory.claims._implicit_bias import pad_to_simd
from dltheory.claims.base import Claim, Outcome, Results, Verdict
from dltheory.data import separable_gaussian
from dltheory.engine import Sweep
from dltheory.errors import ConfigError
from dltheory.reference import max_margin

_PROFILES = {
    "smoke": dict(n=30, d=10, steps=10_000, margin=0.1, lr_scale=1.0, checkpoints=25),
    "quick": dict(n=50, d=20, steps=1_000_000, margin=0.1, lr_scale=1.0, checkpoints=60),
    "full": dict(n=200, d=100, steps=10_000_000, margin=0.1, lr_scale=1.0, checkpoints=80),
}
_SEEDS = {"smoke": 3, "quick": 8, "full": 32}

# Criterion constants, fixed from the theorem before running (not tuned on results).
_LATE = 10  # "late" = the last decade of steps, [T/10, T]
_FIT_FROM = 1000  # fit gap = a + b/log t on t ∈ [T/1000, T] (reported, not judged)
_SLOPE_RANGE = (0.8, 1.25)  # d‖w‖/d log t over ‖ŵ‖; Theorem 3 predicts 1


def _checkpoints(steps: int, count: int) -> list[int]:
    return sorted(set(np.unique(np.logspace(0, math.log10(steps), count).astype(int)).tolist()))


_GRAPH_STEPS = 256  # GD steps per CUDA graph replay


def _advance(step, count: int, state: tuple[torch.Tensor, ...], graphs: dict) -> None:
    """Run ``step`` (in-place updates of ``state``) ``count`` times.

    On CUDA the small kernels of one step are launch-bound (~20 launches of a few µs each),
    so blocks of steps are captured once as CUDA graphs (kept in ``graphs``) and replayed.
    """
    if count <= 0:
        return
    if state[0].device.type != "cuda":
        for _ in range(count):
            step()
        return
    for block in (_GRAPH_STEPS, 1):
        reps, count = divmod(count, block)
        if reps and block not in graphs:
            graphs[block] = _capture(step, block, state)
        for _ in range(reps):
            graphs[block].replay()


def _capture(step, block: int, state: tuple[torch.Tensor, ...]):
    saved = [t.clone() for t in state]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the graph, as capture requires
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(block):
            step()
    for t, s in zip(state, saved):  # capture records without running; undo the warm-up
        t.copy_(s)
    return graph


class _SeedRefs:
    """One seed's data, step sizes and references, as unbatched tensors."""

    def __init__(self, X, y, u_hat, svm_margin, lr_log, lr_sq):
        self.X, self.y, self.u_hat, self.svm_margin = X, y, u_hat, svm_margin
        self.lr_log, self.lr_sq = lr_log, lr_sq

    @classmethod
    def build(cls, X: torch.Tensor, y: torch.Tensor, svm, lr_scale: float) -> "_SeedRefs":
        w_hat = torch.tensor(svm.w, device=X.device)
        # The mean logistic loss is β-smooth with β = σ_max(X)²/(4n); the square loss
        # (1/2n)‖Xw − y‖² is σ_max(X)²/n-smooth. Step = lr_scale/β for each, with the 1/n
        # of the mean folded in.
        sigma2 = torch.linalg.matrix_norm(X, ord=2) ** 2
        return cls(X, y, w_hat / w_hat.norm(), svm.margin, lr_scale * 4.0 / sigma2,
                   lr_scale / sigma2)

    def measure(self, w: torch.Tensor, v: torch.Tensor, out: dict[str, list[float]]) -> None:
        u, uv = w / w.norm(), v / v.norm()
        out["gap"].append(float((u - self.u_hat).norm()))
        # Elementwise products and torch reductions, not BLAS dot/gemv, whose result can
        # depend on the memory alignment of the operands (MKL without CNR mode).
        out["one_minus_cos"].append(float(1 - (u * self.u_hat).sum()))
        out["norm"].append(float(w.norm()))
        out["margin_ratio"].append(float((self.y * (self.X * u).sum(1)).min()) / self.svm_margin)
        out["control_gap"].append(float((uv - self.u_hat).norm()))

    def cos_to_least_squares(self, v: torch.Tensor) -> float:
        """cos(v, w_LS): the control's own closed-form limit, w_LS = (XᵀX)⁻¹Xᵀy."""
        # gelsd (SVD) on CPU: the default gelsy gives run-to-run differences in the last
        # bits. CUDA has only gels (QR).
        driver = "gelsd" if self.X.device.type == "cpu" else "gels"
        w_ls = torch.linalg.lstsq(self.X, self.y[:, None], driver=driver).solution[:, 0]
        return float((v * w_ls).sum() / (v.norm() * w_ls.norm()))


class ImplicitBiasGDL2(Claim):
    id = "implicit-bias-gd-l2"
    title = "GD on separable data → ℓ2 max-margin direction"
    source = ("D. Soudry, E. Hoffer, M. S. Nacson, S. Gunasekar, N. Srebro, \"The Implicit Bias "
              "of Gradient Descent on Separable Data\", JMLR 19(70):1–57, 2018, Theorem 3.")
    statement = ("On linearly separable data, gradient descent on the logistic loss diverges in "
                 "norm like ‖ŵ‖·log t while its direction converges to the ℓ2 max-margin "
                 "separator ŵ, the gap shrinking like 1/log t.")
    criterion = (
        "In every seed, over the last decade [T/10, T]: the direction gap ‖w_t/‖w_t‖ − ŵ/‖ŵ‖‖ "
        "still decreases; gap·log t grows by less than half of what a gap that stopped "
        "shrinking would give (ratio < 1 + ½(log T/log(T/10) − 1); a 1/log t rate gives 1); "
        "d‖w‖/d log t is ‖ŵ‖ within [0.8, 1.25]; the normalized margin never exceeds the "
        "SVM's (a check on the reference). Control: GD on the square loss converges to the "
        "closed-form least-squares direction (cos > 0.999), its gap to ŵ stops shrinking "
        "(≥ 0.99× its value at T/10) and ends larger than the logistic run's."
    )
    batched = True

    def sweep(self, profile: str) -> Sweep:
        return Sweep([dict(_PROFILES[profile])], list(range(_SEEDS[profile])), profile, self.id)

    def validate(self, config: Mapping[str, Any]) -> None:
        if config["n"] < 2 or config["d"] < 1:
            raise ConfigError(f"n must be >= 2 and d >= 1 (got n={config['n']}, d={config['d']})")
        if config["steps"] < 1000:
            raise ConfigError(f"steps must be >= 1000 for the rate fit (got {config['steps']})")
        if not 0 < config["lr_scale"] < 2:
            raise ConfigError(f"lr_scale must be in (0, 2): the step is lr_scale/β and GD on "
                              f"the logistic loss needs η < 2/β (got {config['lr_scale']})")
        if config["checkpoints"] < 10:
            raise ConfigError(f"checkpoints must be >= 10 (got {config['checkpoints']})")

    # -- run -------------------------------------------------------------------------
    def run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        # The matrices are tiny (n×d per seed): intra-op threads cost more than they save.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._run_batch(config, seeds, device)
        finally:
            torch.set_num_threads(threads)

    def _run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        n, d, steps = config["n"], config["d"], config["steps"]
        data = [separable_gaussian(n, d, margin=config["margin"],
                                   generator=self.generator(config, s), dtype=torch.float64)
                for s in seeds]
        svms = [max_margin(X, y) for X, y, _ in data]
        # θ: the smallest SVM-scale margin y_i⟨ŵ, x_i⟩ of a non-support point. Their share of
        # the gradient decays like t^−θ against t^−1 for support vectors, so ρ_t settles at the
        # rate t^−(θ−1) (Soudry et al., proof of Thm 3): θ near 1 means a long transient.
        thetas = [float(np.delete((y.numpy() * (X.numpy() @ s.w)), s.support).min())
                  for (X, y, _), s in zip(data, svms)]
        # Everything outside the batched GD loop is computed seed by seed on unbatched
        # tensors, so a seed's numbers are bit-identical whatever batch it runs in.
        per_seed = [_SeedRefs.build(X.to(device), y.to(device), svm, config["lr_scale"])
                    for (X, y, _), svm in zip(data, svms)]
        # Zero rows pad n to whole vector blocks (they add exact zeros to every sum), once,
        # outside the loop: every element of the elementwise kernels (sigmoid) then takes the
        # SIMD path for any batch size (pad_to_simd says why).
        X = pad_to_simd(torch.stack([r.X for r in per_seed]), 1)
        y = pad_to_simd(torch.stack([r.y for r in per_seed]), 1)
        # The two runs side by side on axis 1: the logistic one on rows y_i x_i, the
        # square-loss control on rows x_i, so that one step is 9 small ops, not 14 (a step
        # of 8 seeds at the quick shape is ~60 µs of per-op overhead on the CPU).
        M = torch.stack([y[:, :, None] * X, X], 1)  # (S, 2, n, d)
        Mt = M.transpose(2, 3).contiguous()  # (S, 2, d, n)
        lr = torch.stack([torch.stack([r.lr_log, -r.lr_sq]) for r in per_seed])[:, :, None, None]
        # Products as broadcast-multiply + sum over the contiguous last axis, not bmm: a
        # batched GEMM (or a strided reduction) may pick another kernel for another batch
        # size, and a seed's numbers must not depend on its batch-mates.
        W = torch.zeros(len(seeds), 2, 1, d, dtype=torch.float64, device=device)  # [w, v]
        marks = _checkpoints(steps, config["checkpoints"])
        curves: list[dict[str, list[float]]] = [
            {k: [] for k in ("gap", "one_minus_cos", "norm", "margin_ratio", "control_gap")}
            for _ in seeds]

        def step() -> None:
            # w ← w + η (1/n) Σ_i σ(−y_i⟨w, x_i⟩) y_i x_i        (logistic loss)
            # v ← v − η (1/n) Xᵀ(Xv − y)                         (square loss, the control)
            a = (M * W).sum(3)  # (S, 2, n): y_i⟨w, x_i⟩ and ⟨v, x_i⟩
            a[:, 0].neg_().sigmoid_()
            a[:, 1].sub_(y)
            W.add_(lr * (Mt * a[:, :, None, :]).sum(3)[:, :, None, :])  # lr = [η_log, −η_sq]

        t, graphs = 0, {}
        for mark in marks:
            _advance(step, mark - t, (W,), graphs)
            t = mark
            for i, refs in enumerate(per_seed):
                refs.measure(W[i, 0, 0].clone(), W[i, 1, 0].clone(), curves[i])
        outcomes = []
        for i, (refs, svm) in enumerate(zip(per_seed, svms)):
            outcome = self._summarize(marks, curves[i], svm, refs.cos_to_least_squares(W[i, 1, 0].clone()))
            outcome.metrics["second_margin_theta"] = thetas[i]
            outcomes.append(outcome)
        return outcomes

    def _summarize(self, t: list[int], c: dict[str, list[float]], svm, cos_ls: float) -> Outcome:
        T = t[-1]
        i_late = next(i for i, s in enumerate(t) if s >= T / _LATE)
        fit = [i for i, s in enumerate(t) if s >= max(T / _FIT_FROM, 2)]  # 1/log t: t ≥ 2
        inv_log = np.array([1.0 / math.log(t[i]) for i in fit])
        gaps = np.array([c["gap"][i] for i in fit])
        b, a = np.polyfit(inv_log, gaps, 1)  # gap ≈ a + b / log t
        w_norm_hat = 1.0 / svm.margin
        decade = math.log(T / t[i_late])
        slope = (c["norm"][-1] - c["norm"][i_late]) / decade
        log_ratio = (c["gap"][-1] * math.log(T)) / (c["gap"][i_late] * math.log(t[i_late]))
        # If the gap stopped shrinking, gap·log t would grow by log T / log t_late.
        stalled_ratio = math.log(T) / math.log(t[i_late])
        metrics = {
            "gap_T": c["gap"][-1],
            "gap_T_over_10": c["gap"][i_late],
            "one_minus_cos_T": c["one_minus_cos"][-1],
            "gap_times_log_T": c["gap"][-1] * math.log(T),
            "gap_log_ratio": log_ratio,
            "stalled_log_ratio": stalled_ratio,
            "limit_a": float(a),
            "rate_b": float(b),
            "norm_slope_ratio": slope / w_norm_hat,
            "norm_over_log_T": c["norm"][-1] / math.log(T),
            "svm_norm": w_norm_hat,
            "margin_ratio_T": c["margin_ratio"][-1],
            "max_margin_ratio": max(c["margin_ratio"]),
            "n_support": int(len(svm.support)),
            "svm_kkt_residual": svm.kkt_residual,
            "control_gap_T": c["control_gap"][-1],
            "control_gap_T_over_10": c["control_gap"][i_late],
            "control_cos_to_least_squares": cos_ls,
        }
        diverged = not all(math.isfinite(x) for x in c["norm"])
        return Outcome(metrics, {"t": t, **c}, diverged=diverged)

    # -- judge -----------------------------------------------------------------------
    def judge(self, results: Results) -> Verdict:
        m = [r.metrics for r in results]
        checks = {
            "gap still decreasing": all(x["gap_T"] < x["gap_T_over_10"] for x in m),
            "gap·log t bounded": all(x["gap_log_ratio"] < 1 + 0.5 * (x["stalled_log_ratio"] - 1)
                                     for x in m),
            "‖w‖ grows like ‖ŵ‖ log t": all(
                _SLOPE_RANGE[0] <= x["norm_slope_ratio"] <= _SLOPE_RANGE[1] for x in m),
            "margin ≤ SVM margin": all(x["max_margin_ratio"] <= 1 + 1e-9 for x in m),
            "control → least squares": all(x["control_cos_to_least_squares"] > 0.999 for x in m),
            "control stays away from ŵ": all(
                x["control_gap_T"] >= 0.99 * x["control_gap_T_over_10"]
                and x["control_gap_T"] > x["gap_T"] for x in m),
        }
        med = {k: float(np.median([x[k] for x in m])) for k in
               ("gap_T", "one_minus_cos_T", "gap_log_ratio", "rate_b", "norm_slope_ratio", "margin_ratio_T",
                "control_gap_T", "gap_times_log_T")}
        failed = [k for k, ok in checks.items() if not ok]
        slow = [f"seed {r.seed}: ratio {r.metrics['gap_log_ratio']:.3f}, "
                f"θ={r.metrics['second_margin_theta']:.3f}" for r in results
                if r.metrics["gap_log_ratio"] >= 1 + 0.5 * (r.metrics["stalled_log_ratio"] - 1)]
        measured = (f"median over {len(m)} seeds: gap(T)={med['gap_T']:.3g} "
                    f"(1−cos={med['one_minus_cos_T']:.2g}), gap·log T={med['gap_times_log_T']:.3g}, "
                    f"(gap·log t)(T)/(gap·log t)(T/10)={med['gap_log_ratio']:.3f}, d‖w‖/dlog t ÷ ‖ŵ‖="
                    f"{med['norm_slope_ratio']:.3f}, margin ratio={med['margin_ratio_T']:.3f}; "
                    f"control gap={med['control_gap_T']:.3g}")
        if failed:
            measured += "; failed: " + ", ".join(failed)
        if slow:
            measured += (" (not yet at the 1/log t rate — " + "; ".join(slow) + "; the residual "
                         "settles like t^−(θ−1), θ the smallest non-support margin)")
        return Verdict(not failed, measured, self.criterion, len(m),
                       details={"checks": checks, "medians": med})

    # -- figure ----------------------------------------------------------------------
    def figure(self, results: Results):
        import matplotlib.pyplot as plt

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
        for k, r in enumerate(results):
            t = np.array(r.curves["t"], dtype=float)
            ax1.plot(t, r.curves["gap"], color="C0", alpha=0.6,
                     label="logistic loss (GD)" if k == 0 else None)
            ax1.plot(t, r.curves["control_gap"], color="C3", alpha=0.6,
                     label="square loss (control)" if k == 0 else None)
            ax2.plot(np.log(t[1:]), np.array(r.curves["norm"][1:]) / r.metrics["svm_norm"],
                     color="C0", alpha=0.6)
        t = np.array(results[0].curves["t"], dtype=float)[1:]
        ref = np.median([r.metrics["gap_T"] * math.log(t[-1]) for r in results])
        ax1.plot(t, ref / np.log(t + 1), "k--", label="c / log t")
        ax1.set(xscale="log", yscale="log", xlabel="step t",
                ylabel="‖w/‖w‖ − ŵ/‖ŵ‖‖", title="direction gap to the ℓ2 max-margin separator")
        ax1.legend(fontsize=8)
        lt = np.log(t)
        ax2.plot(lt, lt - lt[-1] + np.median([r.curves["norm"][-1] / r.metrics["svm_norm"]
                                              for r in results]), "k--", label="slope 1")
        ax2.set(xlabel="log t", ylabel="‖w_t‖ / ‖ŵ‖", title="norm grows like ‖ŵ‖ log t")
        ax2.legend(fontsize=8)
        fig.tight_layout()
        return fig


CLAIM = ImplicitBiasGDL2()
