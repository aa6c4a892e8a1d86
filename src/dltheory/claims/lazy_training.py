"""Lazy training: wide NTK-scaled nets reach zero loss while each weight barely moves.

Du, Zhai, Póczos, Singh 2019 (Theorem 4.1 and Lemma 4.2): for f(x) = m^{-1/2} Σ_r a_r
relu(w_rᵀx), a_r = ±1 fixed, w_r ~ N(0, I), ‖x_i‖ = 1 and m large enough, GD on the
square loss drives the training loss to zero at a linear rate while every neuron stays
within ‖w_r(t) − w_r(0)‖ ≤ 4√n ‖y − u(0)‖ / (√m λ0) = O(m^{-1/2}), and the Gram matrix
H(t) stays within λ0/2 of its infinite-width limit H∞, whose smallest eigenvalue is λ0:
H∞_ij = x_iᵀx_j (π − arccos x_iᵀx_j) / (2π). Chizat, Oyallon, Bach 2019 name this the lazy
regime and show it is an effect of the scaling: with the mean-field 1/m (and the step
multiplied by m so that the function moves at the same speed) weights move O(1).

Setup: n random points on the unit sphere, random ±1 labels (pure memorization), full-batch
GD on ½Σ_i (f(x_i) − y_i)² with step η = 1/λmax(H∞) from the closed form, for widths m on a
geometric grid. Measured at the end: the loss ratio L(T)/L(0), max_r ‖w_r − w_r⁰‖ and
‖W − W⁰‖_F/‖W⁰‖_F (computed inline: fits of their log-log slopes against m), and, at
geometrically spaced checkpoints, λmin(H(t)), ‖H(t) − H∞‖₂ and ‖H(t) − H(0)‖₂ (float64
Gram matrices; the GD steps themselves run in float32, all seeds of a width batched).
Negative control: the same runs in the mean-field scaling.

What the widths we can afford show: ‖H(t) − H∞‖₂ and ‖H(t) − H(0)‖₂ fall as m^{-1/2}, as
Lemmas 3.1–3.2 predict, but at n = 20 they are still of the order of λ0 itself at m = 4096
(the lemmas need m = Ω(n⁶/(λ0⁴δ³))), so Du et al.'s absolute λ0/4 bound is reported with
the width at which the fit reaches it rather than judged, and the drift of λmin (bounded by
‖H(t) − H(0)‖₂ via Weyl's inequality) falls more slowly than m^{-1/2} while it is of the
order of λ0.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from dltheory.claims.base import Claim, Outcome, Results, Verdict
from dltheory.engine import Sweep
from dltheory.errors import ConfigError
from dltheory.measure.lazy import relu_ntk_gram_infinite_width
from dltheory.models import TwoLayer, seed_matmul

_PROFILES = {
    "smoke": dict(n=10, d=4, steps=1500, widths=[64, 256, 1024]),
    "quick": dict(n=20, d=5, steps=2000, widths=[64, 128, 256, 512, 1024, 2048, 4096]),
    "full": dict(n=50, d=10, steps=20_000, widths=[2 ** k for k in range(6, 16)]),
}
_SEEDS = {"smoke": 3, "quick": 6, "full": 16}

# Criterion constants, fixed from the theorems before running (not tuned on results).
LOSS_RATIO = 1e-3  # "reaches zero loss": L(T) ≤ 1e-3 · L(0) at every width
EXPONENT = -0.5  # Du et al. Lemma 4.2: movement ∝ m^{-1/2}
EXPONENT_TOL = 0.1  # finite-width corrections to the exponent allowed on our grid
CONTROL_EXPONENT = -0.25  # control: slope above the midpoint between lazy (−½) and O(1) (0)
KERNEL_DRIFT = 0.25  # Du et al. Lemma 3.2: ‖H(t) − H(0)‖₂ < λ0/4 (reported, not judged)
_CHECKPOINTS = 16
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def checkpoints(steps: int) -> list[int]:
    """Steps (before the final one) at which the Gram matrix and loss are measured: 0 and
    a geometric grid, since the kernel moves in the first steps, when the residual is large."""
    grid = np.unique(np.geomspace(1, max(steps, 1), _CHECKPOINTS).astype(int)).tolist()
    return sorted({0, *(t for t in grid if t < steps)})


def h_infinity(X: torch.Tensor) -> torch.Tensor:
    """The infinite-width Gram matrix of the ReLU layer, H∞_ij = x_iᵀx_j (π − arccos x_iᵀx_j)/(2π),
    for a batch of point sets X of shape (..., n, d): :func:`dltheory.measure.lazy.
    relu_ntk_gram_infinite_width` per set (Du et al. 2019, eq. 3)."""
    if X.dim() == 2:
        return relu_ntk_gram_infinite_width(X)
    return torch.stack([h_infinity(x) for x in X])


def empirical_gram(X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """H(t)_ij = (1/m) Σ_r x_iᵀx_j 1{w_rᵀx_i ≥ 0, w_rᵀx_j ≥ 0}: the NTK of the first layer
    with scale-free gradients (Du et al. 2019, eq. 5), shape (S, n, n)."""
    active = (seed_matmul(X, W.mT) >= 0).to(X.dtype)  # (S, n, m)
    return seed_matmul(X, X.mT) * seed_matmul(active, active.mT) / W.shape[-2]


def loglog_slope(widths: Sequence[float], values: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope of log(values) on log(widths) and its 95% half-interval."""
    x, y = np.log(np.asarray(widths, float)), np.log(np.asarray(values, float))
    A = np.vstack([x, np.ones_like(x)]).T
    coef, res, *_ = np.linalg.lstsq(A, y, rcond=None)
    dof = max(len(x) - 2, 1)
    sigma2 = float(np.sum((y - A @ coef) ** 2)) / dof
    se = math.sqrt(sigma2 / float(np.sum((x - x.mean()) ** 2)))
    return float(coef[0]), 1.96 * se


class LazyTraining(Claim):
    id = "lazy-training"
    title = "Wide NTK nets reach zero loss with weights that move O(1/√m)"
    source = ("S. S. Du, X. Zhai, B. Póczos, A. Singh, \"Gradient Descent Provably Optimizes "
              "Over-parameterized Neural Networks\", ICLR 2019, Theorem 4.1, Lemmas 3.2, 4.2; "
              "L. Chizat, E. Oyallon, F. Bach, \"On Lazy Training in Differentiable "
              "Programming\", NeurIPS 2019.")
    statement = ("Gradient descent on a wide two-layer ReLU net in the NTK scaling reaches "
                 "zero training loss while each neuron moves O(m^{-1/2}) from its "
                 "initialization and the Gram matrix stays near its infinite-width limit; "
                 "in the mean-field scaling the weights move O(1).")
    criterion = (
        f"NTK scaling, every width and seed: L(T) ≤ {LOSS_RATIO:g}·L(0). The log-log slopes "
        f"against m of the medians of max_r ‖w_r − w_r⁰‖, of ‖W − W⁰‖_F/‖W⁰‖_F and of "
        f"max_t ‖H(t) − H∞‖₂/λ0 (λ0 = λmin(H∞), closed form; Lemmas 3.1–3.2: both "
        f"‖H(0) − H∞‖ and ‖H(t) − H(0)‖ are O(m^{{-1/2}}), and by Weyl so is the drift of "
        f"λmin) are within ±{EXPONENT_TOL} of {EXPONENT}. Control (mean-field 1/m, step ×m): "
        f"the slopes of max_r ‖w_r − w_r⁰‖ and of max_t ‖H(t) − H∞‖₂/λ0 are above "
        f"{CONTROL_EXPONENT} (weights move O(1) and the kernel does not converge). Reported, "
        f"not judged: at the widest m, max_t ‖H(t) − H(0)‖₂ against Du et al.'s λ0/4 "
        f"(Lemma 3.2, proved for m = Ω(n⁶/(λ0⁴δ³))), min_t λmin(H(t)) against λ0/2, the "
        f"width at which the fitted drift reaches λ0/4, and the slope of the λmin drift."
    )
    batched = True

    # -- setup -----------------------------------------------------------------------
    def sweep(self, profile: str) -> Sweep:
        base = dict(_PROFILES[profile])
        widths = base.pop("widths")
        return Sweep(Sweep.grid(base, {"m": widths, "scaling": ["ntk", "mean-field"]}),
                     list(range(_SEEDS[profile])), profile, self.id)

    def validate(self, config: Mapping[str, Any]) -> None:
        for key in ("n", "d", "m", "steps"):
            if config[key] < 1:
                raise ConfigError(f"{key} must be >= 1 (got {config[key]})")
        if config["d"] < 2:
            raise ConfigError(f"d must be >= 2 so that n points on the sphere are distinct "
                              f"(got {config['d']})")
        if config.get("dtype", "float32") not in _DTYPES:
            raise ConfigError(f"dtype must be float32 or float64 (got {config['dtype']!r})")
        if config["scaling"] not in ("ntk", "mean-field"):
            raise ConfigError(f"scaling must be ntk or mean-field (got {config['scaling']!r})")

    # -- run -------------------------------------------------------------------------
    def run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._run_batch(config, seeds, device)
        finally:
            torch.set_num_threads(threads)

    def _data(self, config: Mapping[str, Any], seed: int, device: str):
        """Points and labels drawn from a generator that ignores m and the scaling, so every
        width and both scalings of a seed fit the same data."""
        g = self.generator({k: config[k] for k in ("n", "d")}, seed, device)
        X = torch.randn(config["n"], config["d"], generator=g, dtype=torch.float64, device=device)
        X = X / X.norm(dim=1, keepdim=True)
        y = torch.randint(0, 2, (config["n"],), generator=g, device=device).to(X.dtype) * 2 - 1
        return X, y

    def _run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        m, steps = config["m"], config["steps"]
        dtype = _DTYPES[config.get("dtype", "float32")]
        data = [self._data(config, s, device) for s in seeds]
        X64 = torch.stack([x for x, _ in data])
        H_inf = [h_infinity(x) for x, _ in data]
        lam0 = torch.stack([torch.linalg.eigvalsh(H)[0] for H in H_inf])
        # η = 1/λmax(H∞): the NTK-scale GD on ½‖u − y‖² is then a stable linear iteration
        # (Du et al. take η = O(λ0/n²), far smaller; this only shortens the run).
        eta = torch.stack([1 / torch.linalg.eigvalsh(H)[-1] for H in H_inf])[:, None, None]
        # The arithmetic precision is not part of the experiment: the same weights either way.
        drawn = {k: v for k, v in config.items() if k != "dtype"}
        net = TwoLayer(config["d"], m, generators=[self.generator(drawn, s, device) for s in seeds],
                       scaling=config["scaling"], train_outer=False, device=device)
        # Training runs in `dtype` (float32 by default: the measured movements are ≥ 1e-4 of
        # the weights, far above its rounding; a test compares with float64); everything
        # measured (Gram matrices, eigenvalues, norms, losses) is evaluated in float64.
        W = net.W.detach().to(dtype)
        W0 = W.clone()
        X, y = X64.to(dtype), torch.stack([t for _, t in data]).to(dtype)
        Xt, a = X.mT.contiguous(), net.a.to(dtype)
        scale = net.scale
        # Mean-field: f is m^{-1/2} times smaller and so is every gradient; the step ×m keeps
        # the function moving at the NTK run's speed (Chizat et al. 2019, Section 2).
        lr = (eta * (m if config["scaling"] == "mean-field" else 1)).to(dtype)
        coef = a[..., None] * (-lr * scale)  # (S, m, 1): −η · scale · a_r
        marks = checkpoints(steps)
        y64, a64 = y.double(), a.double()
        H_inf = torch.stack(H_inf)
        H0 = empirical_gram(X64, W0.double())
        lam_rows, loss_rows, inf_rows, init_rows = [], [], [], []

        def spectral(A: torch.Tensor) -> torch.Tensor:
            return torch.linalg.eigvalsh(A).abs().amax(-1)

        def measure() -> None:
            W64 = W.double()
            h = seed_matmul(X64, W64.mT)
            r = scale * (torch.relu(h) * a64[:, None, :]).sum(-1) - y64  # no batched GEMV
            loss_rows.append(0.5 * (r ** 2).sum(1))
            H = empirical_gram(X64, W64)
            lam_rows.append(torch.linalg.eigvalsh(H)[:, 0] / lam0)
            inf_rows.append(spectral(H - H_inf) / lam0)  # ‖H(t) − H∞‖₂ / λ0
            init_rows.append(spectral(H - H0) / lam0)  # ‖H(t) − H(0)‖₂ / λ0

        for t in range(steps):
            if t in marks:
                measure()
            h = seed_matmul(W, Xt)  # (S, m, n): w_rᵀx_i
            D = (h > 0).to(dtype)
            # (batched GEMV rounds differently with the number of seeds: multiply + sum)
            r = scale * (h * D * a[..., None]).sum(1) - y  # (S, n): u − y
            # ∂/∂w_r ½‖u − y‖² = scale · a_r Σ_i (u_i − y_i) 1{w_rᵀx_i > 0} x_i
            W.addcmul_(seed_matmul(D, r[..., None] * X), coef)
        measure()
        lam_curve = torch.stack(lam_rows, 1).tolist()  # one host transfer per run
        loss_curve = torch.stack(loss_rows, 1).tolist()
        to_inf = torch.stack(inf_rows, 1).amax(1).tolist()
        from_init = torch.stack(init_rows, 1).amax(1).tolist()
        W64, W064 = W.double(), W0.double()
        move = (W64 - W064).norm(dim=-1)  # (S, m): ‖w_r − w_r⁰‖
        rel = (W64 - W064).flatten(1).norm(dim=1) / W064.flatten(1).norm(dim=1)
        gram_change = ((empirical_gram(X64, W64) - H0).flatten(1).norm(dim=1)
                       / H0.flatten(1).norm(dim=1))
        outcomes = []
        for i in range(len(seeds)):
            lam = np.asarray(lam_curve[i])
            metrics = {
                "m": m, "scaling": config["scaling"],
                "loss_ratio": loss_curve[i][-1] / loss_curve[i][0],
                "max_neuron_move": float(move[i].max()),
                "relative_frobenius_move": float(rel[i]),
                "gram_change": float(gram_change[i]),
                "lambda0": float(lam0[i]),
                "init_lambda_ratio": float(lam[0]),
                "lambda_min_ratio": float(lam.min()),
                "lambda_drop": float(lam[0] - lam.min()),
                "lambda_deviation": float(np.abs(lam - 1).max()),
                "kernel_to_infinite": to_inf[i],
                "kernel_drift": from_init[i],
            }
            outcomes.append(Outcome(metrics, {"t": marks + [steps], "loss": loss_curve[i],
                                              "lambda_ratio": lam_curve[i]},
                                    diverged=not math.isfinite(metrics["loss_ratio"])))
        return outcomes

    # -- judge -----------------------------------------------------------------------
    def _slopes(self, results: Results) -> dict[str, tuple[float, float]]:
        widths = sorted({r.config["m"] for r in results})
        out = {}
        for key in ("max_neuron_move", "relative_frobenius_move", "gram_change",
                    "kernel_to_infinite", "kernel_drift", "lambda_drop"):
            med = [float(np.median([r.metrics[key] for r in results.where(m=m)])) for m in widths]
            out[key] = loglog_slope(widths, med) if min(med) > 0 else (math.nan, math.nan)
        return out

    def judge(self, results: Results) -> Verdict:
        ntk, mf = results.where(scaling="ntk"), results.where(scaling="mean-field")
        if len({r.config["m"] for r in ntk}) < 2 or len({r.config["m"] for r in mf}) < 2:
            return Verdict(False, "need at least two widths in each scaling to fit a slope",
                           self.criterion, len(results))
        s_ntk, s_mf = self._slopes(ntk), self._slopes(mf)
        widest = max(r.config["m"] for r in ntk)

        def lazy(key):
            return abs(s_ntk[key][0] - EXPONENT) <= EXPONENT_TOL  # False for nan

        checks = {
            "zero loss at every width": all(r.metrics["loss_ratio"] <= LOSS_RATIO for r in ntk),
            "max_r ‖w_r − w_r⁰‖ ∝ m^-1/2": lazy("max_neuron_move"),
            "‖W − W⁰‖_F/‖W⁰‖_F ∝ m^-1/2": lazy("relative_frobenius_move"),
            "‖H(t) − H∞‖₂ ∝ m^-1/2": lazy("kernel_to_infinite"),
            "control: weights move O(1)": s_mf["max_neuron_move"][0] > CONTROL_EXPONENT,
            "control: kernel does not converge": s_mf["kernel_to_infinite"][0] > CONTROL_EXPONENT,
        }
        failed = [k for k, ok in checks.items() if not ok]
        worst_loss = max(r.metrics["loss_ratio"] for r in ntk)
        at_widest = ntk.where(m=widest)
        drift = max(r.metrics["kernel_drift"] for r in at_widest)
        floor = min(r.metrics["lambda_min_ratio"] for r in at_widest)
        init = float(np.median([r.metrics["init_lambda_ratio"] for r in at_widest]))
        med_drift = float(np.median([r.metrics["kernel_drift"] for r in at_widest]))
        slope = s_ntk["kernel_drift"][0]
        # Width at which the fitted median drift reaches Du et al.'s λ0/4 (extrapolated).
        m_star = (widest * (med_drift / KERNEL_DRIFT) ** (-1 / slope)
                  if slope < 0 and med_drift > KERNEL_DRIFT else widest)

        def fmt(s):
            return f"{s[0]:.3f} ± {s[1]:.3f}"

        measured = (f"NTK: worst L(T)/L(0) = {worst_loss:.2g}; slopes vs m: max_r‖w_r−w_r⁰‖ "
                    f"{fmt(s_ntk['max_neuron_move'])}, ‖W−W⁰‖_F/‖W⁰‖_F "
                    f"{fmt(s_ntk['relative_frobenius_move'])}, max_t‖H(t)−H∞‖₂ "
                    f"{fmt(s_ntk['kernel_to_infinite'])}, max_t‖H(t)−H(0)‖₂ "
                    f"{fmt(s_ntk['kernel_drift'])}, λmin drift {fmt(s_ntk['lambda_drop'])}; "
                    f"at m={widest}: λmin(H(0))/λ0 = {init:.3f} (median), max_t‖H(t)−H(0)‖₂ = "
                    f"{drift:.3f}·λ0 (Du et al.'s λ0/4 "
                    f"{'met' if drift < KERNEL_DRIFT else f'not met; fit reaches it at m ≈ {m_star:.2g}'}), "
                    f"min_t λmin(H(t)) = {floor:.3f}·λ0 (λ0/2 {'met' if floor >= 0.5 else 'not met'}). "
                    f"Mean-field control: slopes max_r‖w_r−w_r⁰‖ {fmt(s_mf['max_neuron_move'])}, "
                    f"max_t‖H(t)−H∞‖₂ {fmt(s_mf['kernel_to_infinite'])}")
        if failed:
            measured += "; failed: " + ", ".join(failed)
        return Verdict(not failed, measured, self.criterion, len(results),
                       details={"checks": checks, "ntk_slopes": s_ntk, "control_slopes": s_mf,
                                "widest_kernel_drift": drift, "widest_lambda_floor": floor,
                                "drift_reaches_quarter_at": m_star})

    # -- figure ----------------------------------------------------------------------
    def figure(self, results: Results):
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
        for scaling, color in (("ntk", "C0"), ("mean-field", "C3")):
            runs = results.where(scaling=scaling)
            widths = sorted({r.config["m"] for r in runs})
            for ax, key in zip(axes[:2], ("max_neuron_move", "relative_frobenius_move")):
                med = [np.median([r.metrics[key] for r in runs.where(m=m)]) for m in widths]
                ax.plot(widths, med, "o-", color=color, label=scaling)
        widths = sorted({r.config["m"] for r in results})
        for ax, key, title in zip(axes[:2], ("max_neuron_move", "relative_frobenius_move"),
                                  ("max_r ‖w_r − w_r⁰‖", "‖W − W⁰‖_F / ‖W⁰‖_F")):
            ref = np.median([r.metrics[key] for r in results.where(scaling="ntk", m=widths[0])])
            ax.plot(widths, ref * (np.array(widths) / widths[0]) ** EXPONENT, "k--",
                    label="m^-1/2")
            ax.set(xscale="log", yscale="log", xlabel="width m", title=title)
            ax.legend(fontsize=8)
        for m in widths:
            runs = results.where(scaling="ntk", m=m)
            axes[2].plot(runs[0].curves["t"], np.median([r.curves["lambda_ratio"] for r in runs], 0),
                         label=f"m={m}")
        axes[2].axhline(1.0, color="k", ls="--", label="λmin(H∞)")
        axes[2].set_xscale("symlog", linthresh=1)
        axes[2].set_xlim(left=0)
        axes[2].set(xlabel="GD step", ylabel="λmin(H(t)) / λmin(H∞)",
                    title="NTK Gram stays near H∞ (NTK scaling)")
        axes[2].legend(fontsize=7)
        fig.tight_layout()
        return fig


CLAIM = LazyTraining()
