"""The stochastic subgradient method reaches Clarke-stationary points of non-smooth losses.

Davis, Drusvyatskiy, Kakade, Lee, "Stochastic subgradient method converges on tame
functions" (FoCM 2020), Theorem 4.2: for locally Lipschitz Whitney-stratifiable f, with
steps η_t → 0, Σ η_t = ∞, Σ η_t² < ∞, every limit point of the stochastic subgradient
method is Clarke-stationary. Stationarity of a non-smooth function cannot be read off one
subgradient (it is large right next to a kink); we certify it by the Goldstein
ε-subdifferential: dist(0, conv{∇f(y) : y sampled in the ball B(x, ε)}), the min-norm point
of the hull (``dltheory.measure.goldstein_gaps``, the sampled gradients of all seeds in one
batched closed-form call; non-negative least squares, checked against
cvxpy in the tests). The hull of
K sampled gradients in dimension D misses 0 with high probability when K is close to D
(Wendel: half the time at K = 2D even for gradients spread evenly around 0), which puts a
floor under the measured gap; K = 6D samples remove it (measured at a stationary point: gap
0.01–0.1 with K = 1.5D, < 1e-9 with K = 6D).

Problems: robust phase retrieval f(x) = (1/m) Σ |⟨a_i, x⟩² − b_i| (Duchi & Ruan 2019;
Davis, Drusvyatskiy, Paquette 2020), whose stationary points near the signal are ±x*, and a
ReLU network regression (1/n) Σ |f_θ(x_i) − y_i| on a planted teacher of the same width.
Steps η_t = η₀ / t^0.6 (Σ η_t = ∞, Σ η_t² < ∞, as the theorem asks; η₀/√t has Σ η_t² = ∞),
a minibatch of 4 stochastic subgradients per step (closed form, checked against autograd),
seeds stacked into one batched run. η₀ = 0.05 for phase retrieval (0.5 diverges); 0.5 for
the ReLU regression, whose gradients are ~10× smaller (at 0.05 it was still far from
stationary after 8000 steps: loss 0.19, gap 0.13). Negative control: the constant step η₀
(no decay), too large to settle: the iterates keep bouncing at a gap bounded away from 0.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from dltheory.claims.base import Claim, Outcome, Results, Verdict
from dltheory.engine import Sweep
from dltheory.errors import ConfigError
from dltheory.measure.stationarity import goldstein_gaps
from dltheory.models import seed_matmul

# per problem: phase retrieval in dimension d; the ReLU regression's θ has hidden·(d + 1)
# entries. The Goldstein certificate samples samples_per_dim gradients per dimension.
_PROFILES = {
    "smoke": {"phase-retrieval": dict(d=8, steps=1500, eta0=0.05),
              "relu-regression": dict(d=4, hidden=3, steps=3000, eta0=0.5),
              "common": dict(oversampling=6, batch=4, samples_per_dim=6, radius=0.05, checkpoints=6)},
    "quick": {"phase-retrieval": dict(d=16, steps=8000, eta0=0.05),
              "relu-regression": dict(d=8, hidden=4, steps=20000, eta0=0.5),
              "common": dict(oversampling=6, batch=4, samples_per_dim=6, radius=0.05, checkpoints=8)},
    "full": {"phase-retrieval": dict(d=50, steps=200000, eta0=0.05),
             "relu-regression": dict(d=16, hidden=8, steps=400000, eta0=0.5),
             "common": dict(oversampling=8, batch=4, samples_per_dim=6, radius=0.02, checkpoints=16)},
}
_SEEDS = {"smoke": 2, "quick": 3, "full": 16}
_DECAY = 0.6  # η_t = η₀ t^-0.6: the theorem's Σ η = ∞, Σ η² < ∞
# Criterion constants, fixed from the theorem before running:
_FALL = 0.1  # the certified gap at T is at most 10% of its value at the first checkpoint
_STALL = 0.5  # the control's gap over the last half stays above half of its mid value ...
_SEPARATION = 5.0  # ... and ends at least 5× above the diminishing-step run's


_DRAW_CHUNK = 1024  # minibatch index draws per call (per seed)
# The certificate takes seeds in groups whose (seed, row, sample, unit) products hold about
# this many elements (the full ReLU regression's are 1.7·10⁶ a seed: groups of 2).
_CERTIFY_CHUNK = 2 ** 22


class _Problem:
    """One seed's problem: ``loss(x)`` (full, for the certificate), the stochastic
    subgradient ``subgradient(x, idx)`` of the stacked iterates (closed form, batched over
    seeds), the start, and for phase retrieval the signal."""

    def __init__(self, loss: Callable, data: tuple[torch.Tensor, ...], init: torch.Tensor,
                 n: int, signal: torch.Tensor | None = None):
        self.loss, self.data, self.init, self.n, self.signal = loss, data, init, n, signal


def _phase_retrieval(config, gen, device) -> _Problem:
    d = config["d"]
    m = config["oversampling"] * d
    A = torch.randn(m, d, generator=gen, dtype=torch.float64, device=device)
    x_star = torch.randn(d, generator=gen, dtype=torch.float64, device=device)
    x_star /= x_star.norm()
    b = (A @ x_star) ** 2

    def loss(x):
        return ((A @ x) ** 2 - b).abs().mean()

    # a start at distance 0.5 from the signal, inside the region where the robust loss is
    # sharp and the method provably converges (Davis, Drusvyatskiy, Paquette 2020)
    init = x_star + 0.5 * torch.randn(d, generator=gen, dtype=torch.float64, device=device) / math.sqrt(d)
    return _Problem(loss, (A, b), init, m, x_star)


def _phase_subgradient(x, A, b):
    """Seeds stacked: x (S, d), A (S, B, d), b (S, B) → (1/B) Σ sign(r_i) 2⟨a_i, x⟩ a_i."""
    z = (A * x[:, None, :]).sum(-1)
    return ((torch.sign(z * z - b) * 2 * z)[..., None] * A).mean(1)


def _phase_gradients(Y, A, b):
    """The full loss's gradient at K points per seed, seeds stacked: Y (S, K, d), A (S, m, d),
    b (S, m) → (S, K, d). Batch-invariant GEMMs (:func:`seed_matmul`): a seed gets the bits
    it gets alone."""
    z = seed_matmul(A, Y.mT)  # (S, m, K): ⟨a_i, y_k⟩
    return seed_matmul(A.mT, torch.sign(z * z - b[..., None]) * 2 * z).mT / A.shape[1]


def _relu_regression(config, gen, device) -> _Problem:
    d, k = config["d"], config["hidden"]
    n = config["oversampling"] * d * 2
    kw = dict(generator=gen, dtype=torch.float64, device=device)
    X = torch.randn(n, d, **kw)
    W_t = torch.randn(k, d, **kw) / math.sqrt(d)
    a_t = torch.randn(k, **kw) / math.sqrt(k)
    y = torch.relu(X @ W_t.T) @ a_t

    def loss(theta):
        W, a = theta[: k * d].reshape(k, d), theta[k * d:]
        return (torch.relu(X @ W.T) @ a - y).abs().mean()

    init = torch.cat([torch.randn(k * d, **kw) / math.sqrt(d), torch.randn(k, **kw) / math.sqrt(k)])
    return _Problem(loss, (X, y), init, n)


def _relu_subgradient(theta, X, y):
    """Seeds stacked: θ (S, k·d + k), X (S, B, d), y (S, B) → the ℓ1 loss's subgradient
    with sign(0) = 0 and relu'(0) = 0 (PyTorch's conventions)."""
    S, B, d = X.shape
    k = theta.shape[1] // (d + 1)
    W, a = theta[:, : k * d].reshape(S, 1, k, d), theta[:, k * d:]
    pre = (X[:, :, None, :] * W).sum(-1)  # (S, B, k)
    h = torch.relu(pre)
    s = torch.sign((h * a[:, None, :]).sum(-1) - y)[..., None]  # (S, B, 1)
    g_a = (s * h).mean(1)
    g_W = ((s * a[:, None, :] * (pre > 0))[..., None] * X[:, :, None, :]).mean(1)
    return torch.cat([g_W.reshape(S, -1), g_a], 1)


def _relu_gradients(T, X, y):
    """The full ℓ1 loss's gradient at K points θ per seed, seeds stacked: T (S, K, k·d + k),
    X (S, n, d), y (S, n) → (S, K, k·d + k); sign(0) = 0 and relu'(0) = 0 as in
    :func:`_relu_subgradient`. Batch-invariant GEMMs, as :func:`_phase_gradients`."""
    S, K, D = T.shape
    n, d = X.shape[1:]
    k = D // (d + 1)
    a = T[..., k * d:]  # (S, K, k)
    pre = seed_matmul(X, T[..., : k * d].reshape(S, K * k, d).mT).reshape(S, n, K, k)
    h = torch.relu(pre)
    s = torch.sign((h * a[:, None]).sum(-1) - y[..., None])[..., None]  # (S, n, K, 1)
    g_a = (s * h).sum(1) / n
    g_W = seed_matmul((s * a[:, None] * (pre > 0)).reshape(S, n, K * k).mT, X) / n  # (S, K·k, d)
    return torch.cat([g_W.reshape(S, K, k * d), g_a], -1)


def _with_data(gradients, data, Y):
    return gradients(Y, *data)


def _certify(problems: Sequence[_Problem], gradients, x: torch.Tensor, config, gens) -> list[float]:
    """The Goldstein gap of each seed's iterate (inf where it is not finite), the sampled
    gradients of a group of seeds in one batched call (:func:`goldstein_gaps`); the groups'
    size bounds the products' memory and is fixed by the config alone."""
    samples = config["samples_per_dim"] * x.shape[1]
    rows = problems[0].data[0].shape[0]
    group = max(1, _CERTIFY_CHUNK // (samples * rows * max(1, config["hidden"])))
    finite = [s for s in range(len(problems)) if bool(torch.isfinite(x[s]).all())]
    gaps = dict.fromkeys(range(len(problems)), math.inf)  # diverged: no stationary point in sight
    for i in range(0, len(finite), group):
        part = finite[i:i + group]
        data = [torch.stack([problems[s].data[j] for s in part]) for j in range(len(problems[0].data))]
        found = goldstein_gaps(partial(_with_data, gradients, data), x[part], config["radius"],
                               samples, [gens[s] for s in part])
        gaps.update(zip(part, found))
    return [gaps[s] for s in range(len(problems))]


def _sgd(problems: Sequence[_Problem], subgradient, gradients, steps: int, step_size, marks, config,
         gens):
    """The stochastic subgradient method on all seeds at once; the Goldstein gap per seed at
    each mark (each seed's draws come from its own generator, in the same order as alone)."""
    x = torch.stack([p.init for p in problems])
    data = [torch.stack(t) for t in zip(*(p.data for p in problems))]
    rows = torch.arange(len(problems), device=x.device)[:, None]
    gaps: list[list[float]] = [[] for _ in problems]
    mark_set = set(marks)
    drawn, first = None, 1
    for t in range(1, steps + 1):
        if drawn is None or t - first == drawn.shape[1]:
            # Draw the minibatches of the steps up to the next mark (at most _DRAW_CHUNK; the
            # Goldstein gap draws from the same generator at a mark) at once: randint draws
            # element by element, so one (steps, batch) draw is the stream of that many
            # (batch,) draws — the same bits, without a call per seed per step.
            ahead = min(_DRAW_CHUNK, min((m for m in marks if m >= t), default=steps) - t + 1)
            drawn = torch.stack([torch.randint(p.n, (ahead, config["batch"]), generator=g,
                                               device=x.device) for p, g in zip(problems, gens)])
            first = t
        idx = drawn[:, t - first]
        x = x - step_size(t) * subgradient(x, *(v[rows, idx] for v in data))
        if t in mark_set:
            for s, gap in enumerate(_certify(problems, gradients, x, config, gens)):
                gaps[s].append(gap)
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
    batched = True

    def sweep(self, profile: str) -> Sweep:
        p = _PROFILES[profile]
        configs = [{**p["common"], "hidden": 0, **p[problem], "problem": problem}
                   for problem in ("phase-retrieval", "relu-regression")]
        return Sweep(configs, list(range(_SEEDS[profile])), profile, self.id)

    def validate(self, config: Mapping[str, Any]) -> None:
        if config["problem"] not in ("phase-retrieval", "relu-regression"):
            raise ConfigError(f"problem must be phase-retrieval or relu-regression "
                              f"(got {config['problem']!r})")
        if config["steps"] < 100 or config["checkpoints"] < 3:
            raise ConfigError("steps must be >= 100 and checkpoints >= 3")
        if not (config["eta0"] > 0 and config["radius"] > 0):
            raise ConfigError("eta0 and radius must be positive")
        if config["batch"] < 1 or config["samples_per_dim"] < 1:
            raise ConfigError("batch and samples_per_dim must be >= 1")

    def run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        gens = [self.generator(config, seed, device) for seed in seeds]
        phase = config["problem"] == "phase-retrieval"
        make, subgradient, gradients = ((_phase_retrieval, _phase_subgradient, _phase_gradients) if phase
                                        else (_relu_regression, _relu_subgradient, _relu_gradients))
        problems = [make(config, g, device) for g in gens]
        steps, eta0 = config["steps"], config["eta0"]
        # log-spaced checkpoints, and T/2 for the control's stall test
        marks = sorted({*np.logspace(1, math.log10(steps), config["checkpoints"]).astype(int).tolist(),
                        steps // 2})
        x, gaps = _sgd(problems, subgradient, gradients, steps, lambda t: eta0 / t ** _DECAY, marks,
                        config, gens)
        # the control: the same method with its first step η₀ kept constant (no decay)
        _, control = _sgd(problems, subgradient, gradients, steps, lambda t: eta0, marks, config, gens)
        half = marks.index(steps // 2)
        outcomes = []
        for s, p in enumerate(problems):
            # the rate over the checkpoints whose gap is above round-off (phase retrieval
            # reaches an exact 0 ∈ hull, measured as ~1e-13)
            fit = [(t, g) for t, g in zip(marks, gaps[s]) if 1e-9 * gaps[s][0] < g < math.inf]
            rate = float(np.polyfit(*np.log(np.array(fit)).T, 1)[0]) if len(fit) > 1 else 0.0
            metrics = {
                "gap_first": gaps[s][0], "gap_T": gaps[s][-1], "gap_rate_exponent": rate,
                "control_gap_half": control[s][half], "control_gap_T": control[s][-1],
                "final_loss": float(p.loss(x[s])),
            }
            if p.signal is not None:
                metrics["distance_to_signal"] = float(torch.minimum((x[s] - p.signal).norm(),
                                                                    (x[s] + p.signal).norm()))
            diverged = not all(math.isfinite(g) for g in gaps[s])
            outcomes.append(Outcome(metrics, {"t": marks, "gap": gaps[s], "control_gap": control[s]},
                                    diverged=diverged))
        return outcomes
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
                        label="η₀/t^0.6" if k == 0 else None)
                ax.plot(r.curves["t"], r.curves["control_gap"], color="C3", alpha=0.7,
                        label="constant step η₀ (control)" if k == 0 else None)
            ax.set(xscale="log", yscale="log", xlabel="step t", title=problem,
                   ylabel="Goldstein gap dist(0, conv ∇f(B(x, ε)))")
            ax.legend(fontsize=8)
        fig.tight_layout()
        return fig


CLAIM = SubgradientSGDStationarity()
