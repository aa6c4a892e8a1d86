"""The stochastic subgradient method reaches Clarke-stationary points of non-smooth losses.

Davis, Drusvyatskiy, Kakade, Lee, "Stochastic subgradient method converges on tame
functions" (FoCM 2020), Theorem 4.2: for locally Lipschitz Whitney-stratifiable f, with
steps η_t → 0, Σ η_t = ∞, Σ η_t² < ∞, every limit point of the stochastic subgradient
method is Clarke-stationary. Stationarity of a non-smooth function cannot be read off one
subgradient (it is large right next to a kink); we certify it by the Goldstein
ε-subdifferential: dist(0, conv{∇f(y) : y sampled in the ball B(x, ε)}), the min-norm point
of the hull computed by a QP (cvxpy). The gap → 0 as the iterates approach a stationary point.

Problems: robust phase retrieval f(x) = (1/m) Σ |⟨a_i, x⟩² − b_i| (Duchi & Ruan 2019;
Davis, Drusvyatskiy, Paquette 2020), whose stationary points near the signal are ±x*, and a
ReLU network regression (1/n) Σ |f_θ(x_i) − y_i| on a planted teacher. Steps η_t = η₀/√t
with one sample per step. Negative control: the constant step η₀ (no decay), too large to
settle: the iterates keep bouncing at a gap bounded away from 0.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch

from dltheory.claims.base import Claim, Outcome, Results, Verdict
from dltheory.engine import Sweep
from dltheory.errors import ConfigError

_PROFILES = {
    "smoke": dict(d=8, oversampling=6, steps=1500, eta0=0.05, samples=16,
                  radius=0.05, checkpoints=6, hidden=8),
    "quick": dict(d=16, oversampling=6, steps=8000, eta0=0.05, samples=24,
                  radius=0.05, checkpoints=10, hidden=12),
    "full": dict(d=50, oversampling=8, steps=200000, eta0=0.05, samples=64,
                 radius=0.02, checkpoints=16, hidden=64),
}
_SEEDS = {"smoke": 2, "quick": 3, "full": 16}
# Criterion constants, fixed from the theorem before running:
_FALL = 0.1  # the certified gap at T is at most 10% of its value at the first checkpoint
_STALL = 0.5  # the control's gap over the last half stays above half of its mid value ...
_SEPARATION = 5.0  # ... and ends at least 5× above the diminishing-step run's


def _phase_retrieval(config, gen):
    d = config["d"]
    m = config["oversampling"] * d
    A = torch.randn(m, d, generator=gen, dtype=torch.float64)
    x_star = torch.randn(d, generator=gen, dtype=torch.float64)
    x_star /= x_star.norm()
    b = (A @ x_star) ** 2

    def loss(x, idx=None):
        Ai, bi = (A, b) if idx is None else (A[idx], b[idx])
        return ((Ai @ x) ** 2 - bi).abs().mean()

    # a start at distance 0.5 from the signal, inside the region where the robust loss is
    # sharp and the method provably converges (Davis, Drusvyatskiy, Paquette 2020)
    init = x_star + 0.5 * torch.randn(d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    recovery = lambda x: float(min((x - x_star).norm(), (x + x_star).norm()))  # noqa: E731
    return loss, init, m, recovery


def _relu_regression(config, gen):
    d, k = config["d"], config["hidden"]
    n = config["oversampling"] * d * 2
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    W_t = torch.randn(k, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    a_t = torch.randn(k, generator=gen, dtype=torch.float64) / math.sqrt(k)
    y = torch.relu(X @ W_t.T) @ a_t

    def loss(theta, idx=None):
        W, a = theta[: k * d].reshape(k, d), theta[k * d:]
        Xi, yi = (X, y) if idx is None else (X[idx], y[idx])
        return (torch.relu(Xi @ W.T) @ a - yi).abs().mean()

    init = torch.cat([torch.randn(k * d, generator=gen, dtype=torch.float64) / math.sqrt(d),
                      torch.randn(k, generator=gen, dtype=torch.float64) / math.sqrt(k)])
    return loss, init, n, None


def goldstein_gap(loss, x: torch.Tensor, radius: float, samples: int, gen) -> float:
    """dist(0, conv{∇f(y_k)}) for y_k uniform in the ball B(x, radius): the min-norm point
    of the hull of sampled gradients, by a QP over the simplex (cvxpy, Clarabel)."""
    import cvxpy as cp

    grads = []
    for _ in range(samples):
        u = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        r = radius * float(torch.rand((), generator=gen, dtype=x.dtype)) ** (1 / x.numel())
        y = (x + r * u / u.norm()).requires_grad_(True)
        (g,) = torch.autograd.grad(loss(y), y)
        grads.append(g.numpy())
    G = np.stack(grads, axis=1)  # (dim, samples)
    scale = float(np.linalg.norm(G, axis=0).max()) or 1.0  # a well-scaled problem for the solver
    lam = cp.Variable(samples, nonneg=True)
    problem = cp.Problem(cp.Minimize(cp.norm(G / scale @ lam)), [cp.sum(lam) == 1])
    problem.solve(solver=cp.CLARABEL)
    if lam.value is None:
        raise RuntimeError(f"goldstein_gap: the QP solver returned {problem.status}")
    weights = np.clip(lam.value, 0, None)
    # the norm of a feasible point of the hull: an upper bound on the gap, tight at the optimum
    return float(np.linalg.norm(G @ (weights / weights.sum())))


def _sgd(loss, init, n, steps, step_size, marks, config, gen):
    x = init.clone()
    gaps = []
    mark_set = set(marks)
    for t in range(1, steps + 1):
        i = torch.randint(n, (1,), generator=gen)
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(xr, i), xr)
        x = x - step_size(t) * g
        if not bool(torch.isfinite(x).all()):  # diverged: no stationary point in sight
            gaps += [math.inf] * (len(marks) - len(gaps))
            break
        if t in mark_set:
            gaps.append(goldstein_gap(loss, x, config["radius"], config["samples"], gen))
    return x, gaps


class SubgradientSGDStationarity(Claim):
    id = "subgradient-sgd-stationarity"
    title = "Stochastic subgradient method → Clarke-stationary points"
    source = ("D. Davis, D. Drusvyatskiy, S. Kakade, J. D. Lee, \"Stochastic subgradient method "
              "converges on tame functions\", Foundations of Computational Mathematics 20, 2020, "
              "Theorem 4.2; A. A. Goldstein, \"Optimization of Lipschitz continuous functions\", "
              "Math. Programming 13, 1977 (the ε-subdifferential certificate).")
    statement = ("With diminishing steps, the stochastic subgradient method on a locally Lipschitz "
                 "(Whitney-stratifiable) non-smooth non-convex loss approaches Clarke-stationary "
                 "points; a constant step that is too large does not.")
    criterion = ("For robust phase retrieval and a ReLU-network ℓ1 regression, in every seed: the "
                 "Goldstein gap dist(0, conv ∇f(B(x_t, ε))) at T is ≤ 10% of its value at the first "
                 "checkpoint (the fitted rate in t is reported). Control: with the constant step η₀ "
                 "the gap at T stays ≥ 50% of its value at T/2 and ≥ 5× the diminishing-step "
                 "gap. Phase retrieval: the distance to ±x* is reported.")

    def sweep(self, profile: str) -> Sweep:
        base = dict(_PROFILES[profile])
        return Sweep(Sweep.grid({**base, "problem": "phase-retrieval"},
                                {"problem": ["phase-retrieval", "relu-regression"]}),
                     list(range(_SEEDS[profile])), profile, self.id)

    def validate(self, config: Mapping[str, Any]) -> None:
        if config["problem"] not in ("phase-retrieval", "relu-regression"):
            raise ConfigError(f"problem must be phase-retrieval or relu-regression "
                              f"(got {config['problem']!r})")
        if config["steps"] < 100 or config["checkpoints"] < 3:
            raise ConfigError("steps must be >= 100 and checkpoints >= 3")
        if not (config["eta0"] > 0 and config["radius"] > 0):
            raise ConfigError("eta0 and radius must be positive")

    def run(self, config: Mapping[str, Any], seed: int, device: str) -> Outcome:
        gen = self.generator(config, seed)
        make = _phase_retrieval if config["problem"] == "phase-retrieval" else _relu_regression
        loss, init, n, recovery = make(config, gen)
        steps = config["steps"]
        marks = sorted(set(np.unique(np.logspace(1, math.log10(steps),
                                                 config["checkpoints"]).astype(int)).tolist()))
        x, gaps = _sgd(loss, init, n, steps, lambda t: config["eta0"] / math.sqrt(t), marks,
                       config, gen)
        # the control: the same method with its first step η₀ kept constant (no decay)
        _, control = _sgd(loss, init, n, steps, lambda t: config["eta0"], marks, config, gen)
        half = next(i for i, t in enumerate(marks) if t >= steps / 2)
        slope = float(np.polyfit(np.log(marks[half // 2:]), np.log(np.maximum(gaps[half // 2:],
                                                                               1e-300)), 1)[0])
        metrics = {
            "gap_first": gaps[0], "gap_T": gaps[-1], "gap_rate_exponent": slope,
            "control_gap_half": control[half], "control_gap_T": control[-1],
            "final_loss": float(loss(x)),
        }
        if recovery is not None:
            metrics["distance_to_signal"] = recovery(x)
        diverged = not all(math.isfinite(g) for g in gaps)
        return Outcome(metrics, {"t": marks, "gap": gaps, "control_gap": control}, diverged=diverged)

    def judge(self, results: Results) -> Verdict:
        m = [r.metrics for r in results]
        checks = {
            "gap falls ≥ 10×": all(x["gap_T"] <= _FALL * x["gap_first"] for x in m),
            "control stalls": all(x["control_gap_T"] >= _STALL * x["control_gap_half"]
                                  and x["control_gap_T"] >= _SEPARATION * x["gap_T"] for x in m),
        }
        parts = []
        for problem in ("phase-retrieval", "relu-regression"):
            rows = [r.metrics for r in results.where(problem=problem)]
            if rows:
                med = lambda k: float(np.median([x[k] for x in rows]))  # noqa: E731,B023
                text = (f"{problem}: gap {med('gap_first'):.2g} → {med('gap_T'):.2g} "
                        f"(∝ t^{med('gap_rate_exponent'):.2f}), control {med('control_gap_T'):.2g}")
                if "distance_to_signal" in rows[0]:
                    text += f", distance to ±x* {med('distance_to_signal'):.1e}"
                parts.append(text)
        failed = [k for k, ok in checks.items() if not ok]
        measured = "medians — " + "; ".join(parts) + ("; failed: " + ", ".join(failed) if failed else "")
        return Verdict(not failed, measured, self.criterion, len(m), details={"checks": checks})

    def figure(self, results: Results):
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for ax, problem in zip(axes, ("phase-retrieval", "relu-regression")):
            for k, r in enumerate(results.where(problem=problem)):
                ax.plot(r.curves["t"], r.curves["gap"], color="C0", alpha=0.7,
                        label="η₀/√t" if k == 0 else None)
                ax.plot(r.curves["t"], r.curves["control_gap"], color="C3", alpha=0.7,
                        label="constant step η₀ (control)" if k == 0 else None)
            ax.set(xscale="log", yscale="log", xlabel="step t", title=problem,
                   ylabel="Goldstein gap dist(0, conv ∇f(B(x, ε)))")
            ax.legend(fontsize=8)
        fig.tight_layout()
        return fig


CLAIM = SubgradientSGDStationarity()
