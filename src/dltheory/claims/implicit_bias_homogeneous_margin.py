"""Gradient descent maximizes the normalized margin of homogeneous ReLU networks.

Lyu, Li, "Gradient Descent Maximizes the Margin of Homogeneous Neural Networks", ICLR 2020.
For an L-homogeneous network (f(cθ; x) = c^L f(θ; x): bias-free ReLU nets, L = depth) trained
on the logistic loss 𝓛(θ) = Σ_i log(1 + e^{−q_i}), q_i = y_i f(θ; x_i), once 𝓛 < log 2 (every
point classified), the smoothed normalized margin

    γ̃(θ) = log(1 / (e^{𝓛(θ)} − 1)) / ‖θ‖^L                                    (Theorem 4.1)

is non-decreasing along gradient flow, γ̃ ≤ γ := min_i q_i/‖θ‖^L → the same limit, and every
limit direction is a KKT point of  min ½‖θ‖² s.t. q_i(θ) ≥ 1  (Theorem 4.4).

Setup: separable Gaussian data (``dltheory.data.separable_gaussian``), bias-free ReLU nets of
depth 2 and 3 (widths m), float64. The step is η_t = dq·𝓛_t/‖∇𝓛_t‖², so that each step
lowers log 𝓛 by dq to first order and moves each margin q_i by about dq: the softmax weights
of the support points then change smoothly from step to step, as along gradient flow (a step
that moves the margins by ≳ 1 makes GD zig-zag between support points, and γ̃ drops; we saw
this with η = c/(𝓛‖θ‖^{2L−2}) at a large c). Asymptotically ‖∇𝓛‖ ≈ 𝓛Lγ‖θ‖^{L−1}, so this is a
loss-adaptive step η ∝ 1/(𝓛‖θ‖^{2L−2}) and 𝓛 falls like e^{−dq·t}. The update dq·g/‖g‖²,
g = ∇𝓛/𝓛 a softmax-weighted sum of ∇q_i, never underflows; all losses are in the log domain.
Each seed runs R restarts from independent initializations as one batch (with the other
seeds): restart 0 is *the* run; the best final γ over the R restarts is the reference margin
it is compared with (GD finds a KKT point, not necessarily the global max-margin net). The
KKT residual is ``dltheory.reference.homogeneous_kkt_residual`` (a cvxpy SOCP). Also reported:
γ of the linear SVM (cvxpy) realized as a network (u·x = relu(u·x) − relu(−u·x)), a certified
lower bound on the max normalized margin.

Negative control: the same network from the same initialization trained by GD on the square
loss ½(f − y)², which interpolates at a finite norm: its direction is not driven to a KKT
point of the max-margin problem, so its KKT residual must stay well above the logistic run's.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dltheory.claims._implicit_bias import log_checkpoints
from dltheory.claims.base import Claim, Outcome, Results, Verdict
from dltheory.data import separable_gaussian
from dltheory.engine import Sweep
from dltheory.errors import ConfigError
from dltheory.models import seed_map, seed_matmul
from dltheory.reference import homogeneous_kkt_residual, max_margin

_PROFILES = {
    "smoke": dict(n=16, d=5, width=16, depths=[2, 3], steps=2_000, restarts=2, dq=0.1,
                  control_lr=0.05, margin=0.1, checkpoints=12),
    "quick": dict(n=32, d=8, width=32, depths=[2, 3], steps=6_000, restarts=6, dq=0.1,
                  control_lr=0.05, margin=0.1, checkpoints=12),
    "full": dict(n=100, d=20, width=100, depths=[2, 3], steps=200_000, restarts=32, dq=0.1,
                 control_lr=0.05, margin=0.1, checkpoints=12),
}
_SEEDS = {"smoke": 2, "quick": 4, "full": 16}

# Criterion constants, fixed from the theorem before running (not tuned on results).
# γ̃ is a ratio of float64 quantities each computed to a few ulps (log 𝓛 from a logsumexp of
# margins of size ≲ 10³, ‖θ‖^L from a norm): 1e-12 relative is ~100× their rounding error.
_FLOAT_TOL = 1e-12
_CONTROL_RATIO = 2.0  # the square-loss control's final KKT residual ≥ 2× the logistic run's


def forward(params: Sequence[torch.Tensor], X: torch.Tensor, matmul=seed_matmul) -> torch.Tensor:
    """Bias-free ReLU net ``a·relu(W_{L−1} ⋯ relu(W_1 x))``, homogeneous of degree L = len(params).

    params: ``[W_1 (..., m, d), ..., W_{L−1} (..., m, m), a (..., m)]``; X: (..., n, d).
    Returns (..., n). The products go through ``seed_matmul`` (forward and backward), so a
    seed's numbers do not depend on its batch; ``matmul=torch.matmul`` for ``torch.func``.
    """
    h = X
    for W in params[:-1]:
        h = torch.relu(matmul(h, W.mT))
    return matmul(h, params[-1][..., None])[..., 0]


def _log_loss_terms(q: torch.Tensor) -> torch.Tensor:
    """``log log(1 + e^{−q})`` elementwise, exact for margins of any size."""
    u = torch.exp(-q.abs())
    # q > 0: log log1p(e^{−q}) = −q + log(log1p(u)/u), with log1p(u)/u = 1 − u/2 + O(u²).
    tail = torch.where(u < 1e-8, -u / 2, torch.log(torch.log1p(u) / u))
    return torch.where(q > 0, -q + tail, torch.log(F.softplus(-q)))


def log_logistic_loss(q: torch.Tensor) -> torch.Tensor:
    """``log Σ_i log(1 + e^{−q_i})`` over the last axis, exact for margins of any size.
    Elementwise through ``seed_map`` (softplus rounds its scalar remainder otherwise)."""
    return torch.logsumexp(seed_map(_log_loss_terms, q), dim=-1)


def _smoothed_margin(log_loss: torch.Tensor, norm: torch.Tensor, degree: int) -> torch.Tensor:
    loss = torch.exp(log_loss)
    # log(e^𝓛 − 1) = log 𝓛 + log(expm1(𝓛)/𝓛), and expm1(𝓛)/𝓛 = 1 + 𝓛/2 + O(𝓛²).
    correction = torch.where(loss < 1e-8, loss / 2, torch.log(torch.expm1(loss) / loss))
    return -(log_loss + correction) / norm ** degree


def smoothed_margin(log_loss: torch.Tensor, norm: torch.Tensor, degree: int) -> torch.Tensor:
    """Lyu & Li's γ̃ = −log(e^𝓛 − 1)/‖θ‖^L from log 𝓛 (Theorem 4.1; 𝓛 < log 2 for it to be > 0)."""
    return seed_map(lambda a, b: _smoothed_margin(a, b, degree),
                    *torch.broadcast_tensors(log_loss, norm))


def _init(depth, config, generator):
    """He-style Gaussian init: W_1 ~ N(0, 2/d), W_l ~ N(0, 2/m), a ~ N(0, 1/m)."""
    d, m = config["d"], config["width"]
    shapes = [(m, d)] + [(m, m)] * (depth - 2) + [(m,)]
    fans = [d] + [m] * (depth - 2) + [m]
    gains = [2.0] * (depth - 1) + [1.0]
    return [torch.randn(s, generator=generator, dtype=torch.float64) * math.sqrt(g / f)
            for s, f, g in zip(shapes, fans, gains)]


def _norm(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """‖θ‖ over all layers, batched over the leading axis."""
    return torch.sqrt(sum((p.flatten(1) ** 2).sum(1) for p in params))


class ImplicitBiasHomogeneousMargin(Claim):
    id = "implicit-bias-homogeneous-margin"
    title = "GD on homogeneous ReLU nets increases the normalized margin and nears a KKT point"
    source = ("K. Lyu, J. Li, \"Gradient Descent Maximizes the Margin of Homogeneous Neural "
              "Networks\", ICLR 2020, Theorems 4.1 and 4.4.")
    statement = ("For an L-homogeneous network on separable data with the logistic loss, once the "
                 "loss is below log 2 the smoothed normalized margin log(1/(e^𝓛−1))/‖θ‖^L is "
                 "non-decreasing, and the direction θ/‖θ‖ converges to a KKT point of "
                 "min ‖θ‖² s.t. y_i f(θ; x_i) ≥ 1.")
    criterion = (
        "For every seed and depth L ∈ {2, 3}: the run separates the data; after 𝓛 < log 2 the "
        f"smoothed margin γ̃ never decreases by more than {_FLOAT_TOL:g} relative (float64 "
        "rounding) from one log-spaced checkpoint to the next (the worst step-to-step change, "
        "where GD's discretization error competes with the flow's increase, is reported); "
        "γ̃ ≤ γ at the end (γ̃ is a lower bound of γ); "
        "the KKT residual at T is below its value at the first checkpoint after separation and "
        "below its value at T/10; and the square-loss control (same init) ends with a KKT "
        f"residual ≥ {_CONTROL_RATIO:g}× the logistic run's. Reported: γ over the best γ of R "
        "restarts, and over the linear SVM's margin realized as a network."
    )
    batched = True

    def sweep(self, profile: str) -> Sweep:
        return Sweep([dict(_PROFILES[profile])], list(range(_SEEDS[profile])), profile, self.id)

    def validate(self, config: Mapping[str, Any]) -> None:
        if config["n"] < 2 or config["d"] < 1 or config["width"] < 2:
            raise ConfigError(f"need n >= 2, d >= 1, width >= 2 (got n={config['n']}, "
                              f"d={config['d']}, width={config['width']})")
        if not config["depths"] or any(L not in (2, 3, 4) for L in config["depths"]):
            raise ConfigError(f"depths must be a non-empty list of 2, 3 or 4 (got {config['depths']})")
        if config["steps"] < 100 or config["restarts"] < 1:
            raise ConfigError(f"need steps >= 100 and restarts >= 1 (got steps={config['steps']}, "
                              f"restarts={config['restarts']})")
        if not all(config[k] > 0 for k in ("dq", "control_lr", "margin")):
            raise ConfigError("dq, control_lr and margin must be positive (got " + ", ".join(
                f"{k}={config[k]}" for k in ("dq", "control_lr", "margin")) + ")")

    # -- run -------------------------------------------------------------------------
    def run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny matrices: intra-op threads cost more than they save
        try:
            return self._run_batch(config, seeds, device)
        finally:
            torch.set_num_threads(threads)

    def _run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        R = config["restarts"]
        data, inits = [], {L: [] for L in config["depths"]}
        for seed in seeds:
            g = self.generator(config, seed)
            X, y, _ = separable_gaussian(config["n"], config["d"], margin=config["margin"],
                                         generator=g)
            data.append((X, y))
            for L in config["depths"]:
                inits[L].append([_init(L, config, g) for _ in range(R)])
        svm = [max_margin(X, y, norm=2.0) for X, y in data]
        out: list[dict] = [dict(metrics={}, curves={}) for _ in seeds]
        for L in config["depths"]:
            # Batch layout: seed-major, R restarts per seed, then one square-loss control per seed.
            X = torch.stack([X for X, _ in data]).to(device)
            y = torch.stack([y for _, y in data]).to(device)
            stack = [torch.stack([inits[L][i][r][k] for i in range(len(seeds)) for r in range(R)])
                     .to(device) for k in range(L)]
            Xb, yb = X.repeat_interleave(R, 0), y.repeat_interleave(R, 0)
            logistic = self._logistic(L, config, stack, Xb, yb)
            control = self._square(L, config, [p.reshape(len(seeds), R, *p.shape[1:])[:, 0].clone()
                                               for p in stack], X, y)
            for i in range(len(seeds)):
                self._summarize(L, config, i, R, logistic, control, data[i], svm[i], out[i])
        return [Outcome(o["metrics"], o["curves"],
                        diverged=not all(math.isfinite(v) for v in o["metrics"].values()
                                         if isinstance(v, float)))
                for o in out]

    def _logistic(self, L, config, params, X, y):
        """GD on the logistic loss with η_t = dq·𝓛_t/‖∇𝓛_t‖², batched; checkpoints."""
        params = [p.clone().requires_grad_() for p in params]
        B = X.shape[0]
        worst = torch.full((B,), math.inf, dtype=torch.float64, device=X.device)
        previous = torch.full((B,), -math.inf, dtype=torch.float64, device=X.device)
        separated_at = torch.full((B,), -1, dtype=torch.long, device=X.device)
        log_sep = math.log(math.log(2.0))
        worst_at = torch.full((B,), -1, dtype=torch.long, device=X.device)
        marks = log_checkpoints(config["steps"], config["checkpoints"])
        snapshots, t = [], 0
        for mark in marks:
            for step in range(t, mark):
                q = y * forward(params, X)
                log_loss = log_logistic_loss(q.detach())
                norm = _norm(params).detach()
                below = log_loss < log_sep
                gamma = smoothed_margin(log_loss, norm, L)
                change = (gamma - previous) / gamma.abs()
                new_worst = below & (previous > -math.inf) & (change < worst)
                worst = torch.where(new_worst, change, worst)
                worst_at = torch.where(new_worst, step, worst_at)
                previous = torch.where(below, gamma, previous)
                separated_at = torch.where(below & (separated_at < 0), step, separated_at)
                # −∇𝓛/𝓛 = Σ_i w_i ∇q_i with w_i = σ(−q_i)/𝓛 (log domain).
                w = seed_map(lambda a, b: torch.exp(F.logsigmoid(-a) - b), q.detach(),
                             log_loss[:, None].expand_as(q))
                grads = torch.autograd.grad((w * q).sum(), params)
                # η_t = dq·𝓛/‖∇𝓛‖²: the update is dq·g/‖g‖² with g = −∇𝓛/𝓛.
                scale = config["dq"] / sum((gp.flatten(1) ** 2).sum(1) for gp in grads)
                with torch.no_grad():
                    for p, gp in zip(params, grads):
                        p.add_(scale.reshape(-1, *[1] * (p.dim() - 1)) * gp)
            t = mark
            with torch.no_grad():
                q = y * forward(params, X)
                norm = _norm(params)
                snapshots.append(dict(
                    t=t, params=[p.detach().clone() for p in params],
                    log_loss=log_logistic_loss(q), gamma=q.amin(1) / norm ** L,
                    smoothed=smoothed_margin(log_logistic_loss(q), norm, L)))
        return dict(snapshots=snapshots, worst=worst, worst_at=worst_at, separated_at=separated_at)

    def _square(self, L, config, params, X, y):
        """The control: plain GD on ½ mean (f − y)² from restart 0's initialization (T/2 steps)."""
        params = [p.requires_grad_() for p in params]
        for _ in range(config["steps"] // 2):
            loss = 0.5 * ((forward(params, X) - y) ** 2).mean(1).sum()
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, gp in zip(params, grads):
                    p.sub_(config["control_lr"] * gp)
        return [p.detach() for p in params]

    def _summarize(self, L, config, i, R, logistic, control, data, svm, out) -> None:
        snaps, run = logistic["snapshots"], i * R  # restart 0 of seed i
        device = snaps[-1]["params"][0].device
        X, y = (t.to(device) for t in data)

        def kkt(params):
            params = [p.to(X.device) for p in params]  # snapshots may live on another device
            if not bool((y * forward(params, X)).min() > 0):
                return math.nan  # not separating: no KKT residual
            named = {str(k): p.cpu() for k, p in enumerate(params)}
            return homogeneous_kkt_residual(
                lambda th, Z: forward(list(th.values()), Z, matmul=torch.matmul), named,
                X.cpu(), y.cpu(), degree=L).residual

        sep = int(logistic["separated_at"][run])
        residual, ts = [], []
        for s in snaps:
            if sep >= 0 and s["t"] > sep:
                ts.append(s["t"])
                residual.append(kkt([p[run] for p in s["params"]]))
        smoothed = [float(s["smoothed"][run]) for s in snaps
                    if float(s["log_loss"][run]) < math.log(math.log(2.0))]
        checkpoint_change = min(((b - a) / abs(a) for a, b in zip(smoothed, smoothed[1:])),
                                default=math.inf)
        final = snaps[-1]
        gammas = final["gamma"][i * R:(i + 1) * R]
        control_params = [p[i] for p in control]
        q_control = y * forward(control_params, X)
        k10 = next((k for k, t in enumerate(ts) if t >= ts[-1] / 10), 0) if ts else 0
        linear = svm.margin / (2.0 * L) ** (L / 2) if L > 1 else svm.margin
        # u·x = c^L(relu(u·x) − relu(−u·x)) with rows ±c u, c·I hidden layers, a = c(1, −1):
        # ‖θ‖² = 2L c², so this net has normalized margin γ_svm / (2L)^{L/2}.
        pre = f"L{L}_"
        out["metrics"].update({
            pre + "separated_at": sep,
            pre + "worst_smoothed_change": float(logistic["worst"][run]),
            pre + "worst_smoothed_change_at": int(logistic["worst_at"][run]),
            pre + "worst_checkpoint_change": checkpoint_change,
            pre + "gamma_T": float(final["gamma"][run]),
            pre + "smoothed_T": float(final["smoothed"][run]),
            pre + "log_loss_T": float(final["log_loss"][run]),
            pre + "kkt_first": residual[0] if residual else math.nan,
            pre + "kkt_T_over_10": residual[k10] if residual else math.nan,
            pre + "kkt_T": residual[-1] if residual else math.nan,
            pre + "gamma_over_best_restart": float(final["gamma"][run] / gammas.max()),
            pre + "gamma_over_linear_net": float(final["gamma"][run]) / linear,
            pre + "control_separates": bool(q_control.min() > 0),
            pre + "control_kkt": kkt(control_params),
            pre + "control_gamma": float(q_control.min() / _norm([p[None] for p in control_params])[0] ** L),
        })
        out["curves"].update({
            pre + "t": [s["t"] for s in snaps],
            pre + "gamma": [float(s["gamma"][run]) for s in snaps],
            pre + "smoothed": [float(s["smoothed"][run]) for s in snaps],
            pre + "kkt_t": ts, pre + "kkt": residual,
            pre + "restart_gammas": [float(v) for v in gammas],
        })

    # -- judge -----------------------------------------------------------------------
    @staticmethod
    def _checks(m: Sequence[Mapping[str, Any]], depths) -> dict[str, bool]:
        def every(f):
            return all(f(x, f"L{L}_") for x in m for L in depths)
        return {
            "separates": every(lambda x, p: x[p + "separated_at"] >= 0),
            "smoothed margin monotone": every(lambda x, p: x[p + "worst_checkpoint_change"] >= -_FLOAT_TOL),
            "smoothed ≤ normalized margin": every(lambda x, p: x[p + "smoothed_T"] <= x[p + "gamma_T"]),
            "KKT residual decreasing": every(
                lambda x, p: x[p + "kkt_T"] < x[p + "kkt_first"] and x[p + "kkt_T"] < x[p + "kkt_T_over_10"]),
            "control stays off KKT": every(
                lambda x, p: not x[p + "control_kkt"] < _CONTROL_RATIO * x[p + "kkt_T"]),
        }

    def judge(self, results: Results) -> Verdict:
        if not results:
            return Verdict.nothing_to_judge(self.criterion)
        depths = list(results[0].config.get("depths", [2, 3]))
        m = [r.metrics for r in results]
        checks = self._checks(m, depths)
        failed = [k for k, ok in checks.items() if not ok]

        def med(key):
            return float(np.nanmedian([x[key] for x in m]))
        parts = []
        for L in depths:
            p = f"L{L}_"
            parts.append(
                f"L={L}: γ_T {med(p + 'gamma_T'):.3g} (= {med(p + 'gamma_over_best_restart'):.2f}× best of "
                f"{results[0].config.get('restarts')} restarts, {med(p + 'gamma_over_linear_net'):.2f}× "
                f"SVM-as-net), worst γ̃ change {min(x[p + 'worst_checkpoint_change'] for x in m):.1e} between "
                f"checkpoints ({min(x[p + 'worst_smoothed_change'] for x in m):.1e} per step), "
                f"KKT residual {med(p + 'kkt_first'):.2g} → {med(p + 'kkt_T'):.2g} vs square-loss "
                f"control {med(p + 'control_kkt'):.2g}")
        measured = f"median over {len(m)} seeds; " + "; ".join(parts)
        if failed:
            measured += "; failed: " + ", ".join(failed)
        return Verdict(not failed, measured, self.criterion, len(m), details={"checks": checks})

    # -- figure ----------------------------------------------------------------------
    def figure(self, results: Results):
        import matplotlib.pyplot as plt

        depths = list(results[0].config.get("depths", [2, 3]))
        fig, axes = plt.subplots(1, 3, figsize=(14, 4))
        for j, L in enumerate(depths):
            p = f"L{L}_"
            for s, r in enumerate(results):
                lab = f"L={L}" if s == 0 else None
                t = np.array(r.curves[p + "t"], dtype=float)
                axes[0].plot(t, r.curves[p + "gamma"], color=f"C{j}", alpha=0.6, label=lab)
                sm = np.array(r.curves[p + "smoothed"], dtype=float)
                axes[0].plot(t[sm > 0], sm[sm > 0], "--", color=f"C{j}", alpha=0.6)
                axes[1].plot(r.curves[p + "kkt_t"], r.curves[p + "kkt"], "o-", color=f"C{j}",
                             alpha=0.6, label=lab)
                axes[1].axhline(r.metrics[p + "control_kkt"], color=f"C{j}", ls=":", alpha=0.6)
                axes[2].scatter([j] * len(r.curves[p + "restart_gammas"]),
                                r.curves[p + "restart_gammas"], color=f"C{j}", alpha=0.4, s=12)
                axes[2].scatter([j], [r.metrics[p + "gamma_T"]], color="k", marker="x")
        axes[0].set(xscale="log", xlabel="step t", ylabel="margin / ‖θ‖^L",
                    title="normalized γ (solid), smoothed γ̃ (dashed)")
        axes[1].set(xscale="log", yscale="log", xlabel="step t", ylabel="KKT residual",
                    title="distance to a KKT point (dotted: square-loss control)")
        axes[2].set(xticks=range(len(depths)), xticklabels=[f"L={L}" for L in depths],
                    ylabel="final γ", title="restarts (dots) vs the run (x)")
        for ax in axes[:2]:
            ax.legend(fontsize=8)
        fig.tight_layout()
        return fig


CLAIM = ImplicitBiasHomogeneousMargin()
