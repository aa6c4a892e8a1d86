"""Depth accelerates gradient descent on ℓ4 regression, though it adds no expressiveness.

Arora, Cohen, Hazan, "On the Optimization of Deep Networks: Implicit Acceleration by
Overparameterization", ICML 2018: replacing the linear model ``w`` by a depth-N linear net
``w = W_N ⋯ W_1`` (hidden width 1: scalars on top of a vector) turns gradient descent
into ``w ← w − η‖w‖^{2−2/N}(∇L + (N−1) Pr_w ∇L)`` (Theorem 2), a preconditioner with
momentum-like memory that no regularizer can produce (Theorem 3). Their experiments on
ℓp regression find that with p = 4 the depth-2 net reaches a given loss in fewer steps
than the linear model, while for p = 2 the effect is absent.

Setup: ℓp regression ``L(w) = (1/pm) Σ |x_iᵀw − y_i|^p`` on the diabetes data that ships
with scikit-learn (442 × 10, standardized) and on synthetic Gaussian data with features on
scales from 1 to 0.1 and noise. All models start from the same end-to-end vector w₀ (norm
0.1: the near-zero init under which the paper argues balancedness holds approximately);
the deep nets factor it in balanced form. Every model gets its own best step size from one log grid
(η = 2^{k/4}), chosen after the fact as the one that reaches the target first — the same
tuning for every depth. The minimum L* is computed independently by Newton's method.
All seeds and step sizes of one model run as one batch: S·K stacked nets, the data of each
seed stacked for batched matmuls, each seed's race ending when its first step size arrives
(the tests check that a seed gets, bit for bit, the numbers it gets alone).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from dltheory.claims.base import Claim, Outcome, Results, Verdict
from dltheory.engine import Sweep
from dltheory.errors import ConfigError
from dltheory.models.deep_linear import DeepLinear

_PROFILES = {
    "smoke": dict(datasets=["diabetes"], max_steps=6_000),
    "quick": dict(datasets=["diabetes", "synthetic"], max_steps=20_000),
    "full": dict(datasets=["diabetes", "synthetic"], max_steps=200_000),
}
_SEEDS = {"smoke": 1, "quick": 8, "full": 32}
_DEPTHS = (1, 2, 3)  # the linear model and its depth-2 and depth-3 over-parametrizations
_SYNTHETIC = dict(m=500, d=20, noise=0.5)
# Step sizes 2^-4 ... 2^3 in steps of 2^(1/4): near the stability edge the number of steps
# changes about as fast as η, so the grid resolves factors well below _ACCELERATION.
_LR_GRID = [2.0 ** (k / 4) for k in range(-16, 13)]
_POLL = 32  # steps between the host's looks at whether every seed's race has ended

# Criterion constants, fixed before running (not tuned on results).
_INIT_NORM = 0.1
_TARGET = 1e-6  # reach L − L* ≤ 1e-6 (L(w₀) − L*): the slow, ill-conditioned end of training
_ACCELERATION = 1.25  # "faster" means at least 1.25× fewer steps; below that, "absent"


def _dataset(name: str, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(X, y) in float64, centered, y of unit variance. The diabetes features are
    standardized; the synthetic ones keep their designed scales (1 down to 0.1, so XᵀX has
    condition number ≈ 100)."""
    if name == "diabetes":
        from sklearn.datasets import load_diabetes  # ships with scikit-learn, no download

        X_np, y_np = load_diabetes(return_X_y=True)
        X, y = torch.from_numpy(X_np), torch.from_numpy(y_np)
        X = X / X.std(0)
    else:
        m, d, noise = _SYNTHETIC["m"], _SYNTHETIC["d"], _SYNTHETIC["noise"]
        scales = torch.logspace(0, -1, d, dtype=torch.float64)
        X = torch.randn(m, d, generator=generator, dtype=torch.float64) * scales
        w_star = torch.randn(d, generator=generator, dtype=torch.float64) / math.sqrt(d)
        y = X @ w_star + noise * torch.randn(m, generator=generator, dtype=torch.float64)
    return X - X.mean(0), (y - y.mean()) / y.std()


def _loss_and_slope(r: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1/pm) Σ r_i^p`` over the last axis and ``r^{p−1}`` (its derivative times m), for
    even p; by products, which are exact and far cheaper than ``pow``."""
    slope = r * (r * r) if p == 4 else r
    return (slope * r).mean(-1) / p, slope


def _loss(X: torch.Tensor, y: torch.Tensor, w: torch.Tensor, p: int) -> torch.Tensor:
    """``(1/pm) Σ (x_iᵀw − y_i)^p`` for ``w`` of shape (..., d)."""
    return _loss_and_slope(w @ X.T - y, p)[0]


def _minimum(X: torch.Tensor, y: torch.Tensor, p: int) -> tuple[float, float]:
    """(L*, ‖∇L(w*)‖) by damped Newton from the least-squares solution (L is convex and
    smooth for p ≥ 2; for p = 2 the first step is exact)."""
    driver = "gelsd" if X.device.type == "cpu" else "gels"  # CUDA has only gels (X has full column rank)
    w = torch.linalg.lstsq(X, y[:, None], driver=driver).solution[:, 0]
    for _ in range(100):
        r = X @ w - y
        grad = X.T @ _loss_and_slope(r, p)[1] / len(y)
        hess = (p - 1) * (X.T * r ** (p - 2)) @ X / len(y)
        step, t = torch.linalg.solve(hess, grad), 1.0
        while _loss(X, y, w - t * step, p) > _loss(X, y, w, p) and t > 1e-8:
            t /= 2
        w = w - t * step
        if grad.norm() < 1e-14:
            break
    loss, slope = _loss_and_slope(X @ w - y, p)
    return float(loss), float((X.T @ slope / len(y)).norm())


def _race(net: DeepLinear, X: torch.Tensor, y: torch.Tensor, p: int, lrs: torch.Tensor,
          target: torch.Tensor, max_steps: int) -> list[tuple[int | None, int, list[float]]]:
    """Gradient descent on the layers of ``net``, S seeds × K step sizes, until every seed
    has a step size that reaches its ``L ≤ target``: per seed, (steps, index of the first
    step size to arrive, its loss curve).

    ``net`` holds seed ``s``'s slice for step size ``k`` at ``s·K + k``; X (S, m, d),
    y (S, m), target (S,). Slices run in lockstep, so the first to arrive is the best step
    size of the grid. A seed's ``steps`` is ``None`` when none of its step sizes arrives
    within ``max_steps``; its curve then follows the step size with the lowest loss seen.
    Arrivals are recorded on the device; every ``_POLL`` steps the host looks which seeds
    have arrived, and those leave the race (the steps after a seed's arrival change none of
    its numbers, and the products are batch-invariant: the others go on with the bits they
    get alone), so the batch costs what its seeds' own races cost, not S × the slowest.
    """
    S, K = X.shape[0], len(lrs)
    live = list(range(S))  # the seeds still racing, in batch order
    arrival = torch.full((S,), -1, dtype=torch.long, device=X.device)  # step of first arrival
    winner = torch.zeros(S, dtype=torch.long, device=X.device)  # index of the first to arrive
    step_sizes = lrs.repeat(S)[:, None, None]
    segments: list[tuple[list[int], list[torch.Tensor]]] = [(live, [])]  # losses (S_live, K)
    ended: dict[int, tuple[int, int]] = {}  # seed → (arrival, winner), as it leaves
    with torch.no_grad():
        for t in range(max_steps + 1):
            w = net.end_to_end().reshape(len(live), K, -1)
            loss, slope = _loss_and_slope(w @ X.mT - y[:, None, :], p)  # (S, K), (S, K, m)
            segments[-1][1].append(loss)
            arrived = loss <= target[:, None]
            first = arrived.any(1) & (arrival < 0)
            arrival = torch.where(first, t, arrival)
            winner = torch.where(first, arrived.int().argmax(1), winner)  # argmax: first True
            if t % _POLL == 0 or t == max_steps:
                stop = (arrival >= 0).tolist() if t < max_steps else [True] * len(live)
                if any(stop):
                    for j, (a, b) in enumerate(zip(arrival.tolist(), winner.tolist())):
                        if stop[j]:
                            ended[live[j]] = (a, b)
                    keep = [j for j, done in enumerate(stop) if not done]
                    if not keep:
                        break
                    live = [live[j] for j in keep]
                    net = net.seeds([j * K + k for j in keep for k in range(K)])
                    X, y, target, slope = X[keep], y[keep], target[keep], slope[keep]
                    arrival, winner = arrival[keep], winner[keep]
                    step_sizes = lrs.repeat(len(live))[:, None, None]
                    segments.append((live, []))
            grad = slope @ X / y.shape[1]  # ∇L(w), (S, K, d)
            for W, dW in zip(net.weights, net.layer_gradients(grad.reshape(len(live) * K, 1, -1))):
                W.sub_(step_sizes * dW)
    history: dict[int, list[torch.Tensor]] = {s: [] for s in range(S)}  # (T_seed, K) pieces
    for seeds, losses in segments:
        if losses:
            block = torch.stack(losses)  # (T_segment, S_live, K)
            for j, s in enumerate(seeds):
                history[s].append(block[:, j])
    races = []
    for s in range(S):
        t, best = ended[s]
        losses = torch.cat(history[s])  # (T, K)
        if t < 0:
            best = int(losses.nan_to_num(nan=math.inf).amin(0).argmin())
            races.append((None, best, losses[:, best].tolist()))
        else:
            races.append((t, best, losses[: t + 1, best].tolist()))
    return races


class DeepLinearAcceleration(Claim):
    id = "deep-linear-acceleration"
    title = "Depth accelerates GD on ℓ4 regression (not on ℓ2)"
    source = ("S. Arora, N. Cohen, E. Hazan, \"On the Optimization of Deep Networks: Implicit "
              "Acceleration by Overparameterization\", ICML 2018, Theorem 2 and the ℓp "
              "regression experiments.")
    statement = ("On ℓp regression with p = 4, a depth-2 or depth-3 linear network (a scalar "
                 "over-parametrization of the linear model) trained by gradient descent reaches "
                 "a given loss in fewer steps than the linear model at its own best step size; "
                 "for p = 2 the acceleration is absent or reversed.")
    criterion = (
        "Target: L − L* ≤ 1e-6·(L(w₀) − L*), L* by Newton's method (‖∇L(w*)‖ ≤ 1e-10), "
        "all models from the same w₀ (‖w₀‖ = 0.1, balanced factors), each at the step size "
        "of the grid 2^(k/4), k = −16..12, that arrives first. Acceleration factor = steps "
        "of the linear model ÷ steps of the deep net. p = 4: on every dataset the median "
        "factor over seeds is ≥ 1.25 for depth 2 and for depth 3. Control p = 2: the "
        "median factor is < 1.25 for both depths. Fairness: every model arrives within the "
        "step budget, at a step size inside the grid (not at its ends)."
    )
    batched = True

    def sweep(self, profile: str) -> Sweep:
        spec = _PROFILES[profile]
        configs = Sweep.grid(dict(max_steps=spec["max_steps"]),
                             {"dataset": spec["datasets"], "p": [4, 2]})
        return Sweep(configs, list(range(_SEEDS[profile])), profile, self.id)

    def validate(self, config: Mapping[str, Any]) -> None:
        if config["dataset"] not in ("diabetes", "synthetic"):
            raise ConfigError(f"dataset must be 'diabetes' or 'synthetic', got "
                              f"{config['dataset']!r}")
        if config["p"] not in (2, 4):
            raise ConfigError(f"p must be 2 or 4 (the paper's settings), got {config['p']}")
        if config["max_steps"] < 10:
            raise ConfigError(f"max_steps must be >= 10, got {config['max_steps']}")

    # -- run -------------------------------------------------------------------------
    def run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # (S·K, d) tensors: threads cost more than they save
        try:
            return self._run_batch(config, seeds, device)
        finally:
            torch.set_num_threads(threads)

    def _setup(self, config: Mapping[str, Any], seed: int, device: str) -> dict[str, Any]:
        """One seed's data, w₀, L*, target and the generator state its layers start from."""
        p, g = config["p"], self.generator(config, seed)
        X, y = _dataset(config["dataset"], g)
        X, y = X.to(device), y.to(device)
        w0 = torch.randn(1, X.shape[1], generator=g, dtype=torch.float64)
        w0 = (_INIT_NORM * w0 / w0.norm()).to(device)
        L_star, grad_norm = _minimum(X, y, p)
        L0 = float(_loss(X, y, w0[0], p))
        return dict(X=X, y=y, w0=w0, L_star=L_star, newton_grad_norm=grad_norm, L0=L0,
                    target=L_star + _TARGET * (L0 - L_star), state=g.get_state())

    def _run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        runs = [self._setup(config, seed, device) for seed in seeds]
        X, y = torch.stack([r["X"] for r in runs]), torch.stack([r["y"] for r in runs])
        d, K = X.shape[-1], len(_LR_GRID)
        w0 = torch.stack([r["w0"] for r in runs]).repeat_interleave(K, 0)  # (S·K, 1, d)
        target = torch.tensor([r["target"] for r in runs], dtype=torch.float64, device=device)
        lrs = torch.tensor(_LR_GRID, dtype=torch.float64, device=device)
        metrics: list[dict[str, Any]] = [{k: r[k] for k in ("L_star", "newton_grad_norm", "L0")}
                                         for r in runs]
        curves: list[dict[str, list[float]]] = [{} for _ in runs]
        for N in _DEPTHS:
            # Every step size of a seed starts from the same layers (the same generator state).
            gens = [torch.Generator().set_state(r["state"]) for r in runs for _ in _LR_GRID]
            net = DeepLinear([d] + [1] * N, generators=gens, end_to_end=w0, device=device)
            races = _race(net, X, y, config["p"], lrs, target, config["max_steps"])
            for r, m, c, (steps, best, losses) in zip(runs, metrics, curves, races):
                m[f"steps_N{N}"] = steps
                m[f"best_lr_N{N}"] = _LR_GRID[best]
                m[f"best_lr_interior_N{N}"] = 0 < best < len(_LR_GRID) - 1
                c[f"gap_N{N}"] = [(L - r["L_star"]) / (r["L0"] - r["L_star"]) for L in losses]
        for m in metrics:
            for N in _DEPTHS[1:]:
                lin, deep = m["steps_N1"], m[f"steps_N{N}"]
                m[f"factor_N{N}"] = lin / deep if lin is not None and deep else None
        return [Outcome(m, c) for m, c in zip(metrics, curves)]

    # -- judge -----------------------------------------------------------------------
    def judge(self, results: Results) -> Verdict:
        if not results:
            return Verdict.nothing_to_judge(self.criterion)
        checks: dict[str, bool] = {}
        parts = []
        for dataset in sorted({r.config["dataset"] for r in results}):
            for p in (4, 2):
                runs = results.where(dataset=dataset, p=p)
                if not runs:
                    continue
                m = [r.metrics for r in runs]
                fair = all(x[f"steps_N{N}"] is not None and x[f"best_lr_interior_N{N}"]
                           for x in m for N in _DEPTHS)
                newton = all(x["newton_grad_norm"] <= 1e-10 for x in m)
                checks[f"{dataset}, p={p}: fair tuning"] = fair
                checks[f"{dataset}, p={p}: L* certified"] = newton
                medians, spread = {}, {}
                for N in _DEPTHS[1:]:
                    factors = [x[f"factor_N{N}"] for x in m]
                    medians[N] = float(np.median(factors)) if None not in factors else math.nan
                    spread[N] = (f"[{min(factors):.2f}, {max(factors):.2f}]"
                                 if None not in factors else "[n/a]")
                    ok = medians[N] >= _ACCELERATION if p == 4 else medians[N] < _ACCELERATION
                    name = "accelerates" if p == 4 else "no acceleration (control)"
                    checks[f"{dataset}, p={p}, depth {N}: {name}"] = bool(ok)
                steps = {N: float(np.median([x[f"steps_N{N}"] or math.nan for x in m]))
                         for N in _DEPTHS}
                lrs = {N: float(np.median([x[f"best_lr_N{N}"] for x in m])) for N in _DEPTHS}
                parts.append(f"{dataset} p={p}: steps (median) linear {steps[1]:.0f} @η={lrs[1]:.3g}, "
                             f"depth 2 {steps[2]:.0f} @η={lrs[2]:.3g}, depth 3 {steps[3]:.0f} "
                             f"@η={lrs[3]:.3g}; factors ×{medians[2]:.2f} {spread[2]}, "
                             f"×{medians[3]:.2f} {spread[3]}")
        failed = [k for k, ok in checks.items() if not ok]
        measured = "; ".join(parts)
        if failed:
            measured += "; failed: " + ", ".join(failed)
        return Verdict(not failed, measured, self.criterion, len(results),
                       details={"checks": checks})

    # -- figure ----------------------------------------------------------------------
    def figure(self, results: Results):
        import matplotlib.pyplot as plt

        panels = sorted({(r.config["dataset"], r.config["p"]) for r in results},
                        key=lambda k: (k[0], -k[1]))
        fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.4), squeeze=False)
        for ax, (dataset, p) in zip(axes[0], panels):
            run = min(results.where(dataset=dataset, p=p), key=lambda r: r.seed)
            for N in _DEPTHS:
                gap = np.maximum(np.array(run.curves[f"gap_N{N}"], dtype=float), 1e-12)
                label = "linear" if N == 1 else f"depth {N}"
                ax.semilogy(np.arange(len(gap)), gap, color=f"C{N - 1}",
                            label=f"{label} (η={run.metrics[f'best_lr_N{N}']:.3g})")
            ax.axhline(_TARGET, color="k", ls=":", lw=0.8)
            ax.set(xlabel="GD step", ylabel="(L − L*)/(L(w₀) − L*)",
                   title=f"{dataset}, ℓ{p} loss (seed {run.seed})")
            ax.legend(fontsize=7)
        fig.tight_layout()
        return fig


CLAIM = DeepLinearAcceleration()
