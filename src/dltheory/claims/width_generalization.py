"""Wider nets generalize better after interpolation, and norm-based capacity does not grow.

Neyshabur, Tomioka, Srebro (2015) and Neyshabur, Li, Bhojanapalli, LeCun, Srebro (2019)
train two-layer nets of growing width h to zero training error: the test error keeps
decreasing past the width where the training error first reaches zero, although the
parameter count p grows linearly in h; a capacity measure that explains generalization
must not grow with h. Neyshabur et al. (2019, Fig. 3 and Theorem 1) give one whose value on
trained nets decreases with h; the spectral bound (Bartlett, Foster, Telgarsky 2017) and the
Frobenius bound (Golowich, Rakhlin, Shamir 2018) grow with h in their experiments.

Setup: scikit-learn's digits (``data.digits``: 64 pixels, centred, unit norm), 10 classes,
a random train/test split per seed. Nets f(x) = V relu(U x) (no biases, as in Neyshabur
et al. 2019), U₀ rows ~ N(0, I) (unit pre-activations), V₀ ~ N(0, 1/h), widths h = 2^k,
full-batch GD on the cross-entropy with one step size, stopped — as in the paper — once the
training cross-entropy is ≤ 0.01 (or at the step budget). On the stopped net: train and test
error, the margin γ = 5th percentile of the training margins f_y − max_{j≠y} f_j (the
paper's choice, robust to a few points), p = h(d + c), and the margin-normalized measures of
``measure.bounds``: Neyshabur et al.'s two-layer Rademacher bound (divides by γ itself),
Golowich–Rakhlin–Shamir / γ, Bartlett–Foster–Telgarsky spectral complexity (reference matrices: U₀
and 0) / γ, and the ℓ2 path norm / γ. Spearman correlations with the test error
across widths tell which measures track it. Negative control: the widest net trained the same
way on random labels (Zhang et al. 2017), whose test error is at chance: an explanatory
capacity measure must be much larger there than on the real labels.
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
from dltheory.measure.bounds import (
    golowich_rademacher,
    neyshabur_two_layer_rademacher,
    path_norm,
    spectral_complexity,
)
from dltheory.measure.margin import margins

_PROFILES = {
    "smoke": dict(train=300, widths=[8, 16, 32, 64, 128], steps=300, lr=2.0),
    "quick": dict(train=600, widths=[8, 16, 32, 64, 128, 256], steps=1500, lr=2.0),
    "full": dict(train=1000, widths=[8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096],
                 steps=20_000, lr=2.0),
}
_SEEDS = {"smoke": 2, "quick": 3, "full": 8}
LABELS = ("real", "random")
CLASSES = 10
MEASURES = ("neyshabur", "golowich", "spectral", "path_norm", "params")

# Criterion constants, fixed from the papers before any run (not tuned on results).
STOP_LOSS = 0.01  # Neyshabur et al. 2019 train until the cross-entropy is 0.01
MARGIN_QUANTILE = 0.05  # γ = 5th percentile of the training margins
RANK_DECREASE = -0.5  # Spearman(width, test error) past the interpolation width
CONTROL_RATIO = 2.0  # random labels: Neyshabur bound >= 2x the real-label one, same width
CHANCE = 0.8  # random labels: test error >= 80% (chance is 90%)
_CHECK_EVERY = 50


class WidthGeneralization(Claim):
    id = "width-generalization"
    title = "Test error keeps falling with width after zero training error; which bounds track it"
    source = ("B. Neyshabur, R. Tomioka, N. Srebro, \"In search of the real inductive bias: on "
              "the role of implicit regularization in deep learning\", ICLR workshop 2015; "
              "B. Neyshabur, Z. Li, S. Bhojanapalli, Y. LeCun, N. Srebro, \"The role of "
              "over-parametrization in generalization of neural networks\", ICLR 2019; C. Zhang "
              "et al., \"Understanding deep learning requires rethinking generalization\", ICLR 2017.")
    statement = ("Two-layer nets trained to zero training error on a real dataset generalize "
                 "better as the width grows past the interpolation width, while the parameter "
                 "count grows and the margin-normalized capacity of Neyshabur et al. (2019) "
                 "does not; random labels get a much larger capacity value.")
    criterion = (
        f"h0 = smallest width where every seed reaches zero training error; at least 3 widths "
        f">= h0, all with zero training error. Past h0: mean test error at the widest net < at "
        f"h0 and Spearman(width, test error) <= {RANK_DECREASE}; the Neyshabur et al. bound at the "
        f"widest net <= at h0. Control (widest net, random labels): test error >= {CHANCE:.0%} and "
        f"Neyshabur bound >= {CONTROL_RATIO:g}x the real-label one. Correlations of each measure "
        f"with test error are reported."
    )
    batched = True

    # -- setup -----------------------------------------------------------------------
    def sweep(self, profile: str) -> Sweep:
        base = dict(_PROFILES[profile])
        widths = base.pop("widths")
        configs = [{**base, "width": h, "labels": "real"} for h in widths]
        configs.append({**base, "width": widths[-1], "labels": "random"})
        return Sweep(configs, list(range(_SEEDS[profile])), profile, self.id)

    def validate(self, config: Mapping[str, Any]) -> None:
        if config["labels"] not in LABELS:
            raise ConfigError(f"labels must be one of {', '.join(LABELS)} (got {config['labels']!r})")
        if not 20 <= config["train"] <= N_DIGITS - 100:
            raise ConfigError(f"train must be in [20, {N_DIGITS - 100}] so that >= 100 digits are "
                              f"left to test on (got {config['train']})")
        for key in ("width", "steps"):
            if config[key] < 1:
                raise ConfigError(f"{key} must be >= 1 (got {config[key]})")
        if not 0 < config["lr"] <= 20:
            raise ConfigError(f"lr must be in (0, 20] (got {config['lr']})")

    # -- run -------------------------------------------------------------------------
    def run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small matrices: intra-op threads cost more than they save
        try:
            return self._run_batch(config, seeds, device)
        finally:
            torch.set_num_threads(threads)

    def _split(self, config: Mapping[str, Any], seed: int, device: str):
        """The seed's train/test split (and random labels): drawn from a generator that
        ignores the width, so every width of a seed sees the same data."""
        gen = self.generator({k: v for k, v in config.items() if k != "width"}, seed, device)
        X, y = digits(PIXELS, device=device)
        order = torch.randperm(N_DIGITS, generator=gen, device=device)
        X, y = X[order], y[order]
        if config["labels"] == "random":
            y = torch.randint(0, CLASSES, (N_DIGITS,), generator=gen, device=device)
        n = config["train"]
        return X[:n], y[:n], X[n:], y[n:]

    def _run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        splits = [self._split(config, s, device) for s in seeds]
        X, y, Xt, yt = (torch.stack(parts) for parts in zip(*splits))
        h, d = config["width"], PIXELS
        gens = [self.generator(config, s, device) for s in seeds]
        U0 = torch.stack([torch.randn(h, d, generator=g, dtype=X.dtype, device=device) for g in gens])
        V0 = torch.stack([torch.randn(CLASSES, h, generator=g, dtype=X.dtype, device=device)
                          for g in gens]) / math.sqrt(h)
        U, V, steps = _train(U0, V0, X, y, config["steps"], config["lr"])
        outcomes = []
        for k in range(len(seeds)):
            metrics = _measures(U[k], V[k], U0[k], X[k], y[k], Xt[k], yt[k])
            metrics.update(width=h, labels=config["labels"], steps=int(steps[k]))
            outcomes.append(Outcome(metrics, diverged=not math.isfinite(metrics["train_loss"])))
        return outcomes

    # -- judge -----------------------------------------------------------------------
    def judge(self, results: Results) -> Verdict:
        real = results.where(labels="real")
        widths = sorted({r.config["width"] for r in real})
        mean = {h: {key: float(np.mean([r.metrics[key] for r in real.where(width=h)]))
                    for key in ("train_error", "test_error", "margin") + MEASURES} for h in widths}
        zero = [h for h in widths if mean[h]["train_error"] == 0]
        h0 = zero[0] if zero else None
        past = [h for h in widths if h0 is not None and h >= h0]
        rho = {key: _spearman([mean[h][key] for h in past], [mean[h]["test_error"] for h in past])
               for key in MEASURES}
        rho_width = _spearman(past, [mean[h]["test_error"] for h in past])
        top = widths[-1]
        control = results.where(labels="random", width=top)
        ctrl = ({key: float(np.mean([r.metrics[key] for r in control]))
                 for key in ("train_error", "test_error", "neyshabur")} if control else None)
        checks = {
            "zero training error past h0": len(past) >= 3 and all(mean[h]["train_error"] == 0 for h in past),
            "test error falls past h0": (len(past) >= 3 and mean[top]["test_error"] < mean[h0]["test_error"]
                                         and rho_width <= RANK_DECREASE),
            "Neyshabur bound does not grow": (len(past) >= 2
                                              and mean[top]["neyshabur"] <= mean[h0]["neyshabur"]),
            "random labels at chance": ctrl is not None and ctrl["test_error"] >= CHANCE,
            "random labels get a larger bound": (ctrl is not None and top in mean and ctrl["neyshabur"]
                                                 >= CONTROL_RATIO * mean[top]["neyshabur"]),
        }
        failed = [k for k, ok in checks.items() if not ok]
        measured = (f"h0={h0}; test error " + ", ".join(f"h={h}: {mean[h]['test_error']:.3f}" for h in widths)
                    + f" (Spearman with width past h0 {rho_width:+.2f}); margin γ "
                    + ", ".join(f"{mean[h]['margin']:.2f}" for h in widths)
                    + "; Neyshabur bound " + ", ".join(f"{mean[h]['neyshabur']:.3g}" for h in widths)
                    + "; Spearman(measure, test error): "
                    + ", ".join(f"{key} {rho[key]:+.2f}" for key in MEASURES))
        if ctrl is not None:
            measured += (f"; random labels h={top}: train error {ctrl['train_error']:.2f}, test error "
                         f"{ctrl['test_error']:.2f}, Neyshabur bound "
                         f"{ctrl['neyshabur']:.3g}")
        if failed:
            measured += "; failed: " + ", ".join(failed)
        return Verdict(not failed, measured, self.criterion, len(results),
                       details={"checks": checks, "h0": h0, "means": mean, "spearman": rho,
                                "spearman_width": rho_width, "control": ctrl})

    # -- figure ----------------------------------------------------------------------
    def figure(self, results: Results):
        import matplotlib.pyplot as plt

        real = results.where(labels="real")
        widths = sorted({r.config["width"] for r in real})

        def avg(key):
            return [float(np.mean([r.metrics[key] for r in real.where(width=h)])) for h in widths]

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
        ax1.plot(widths, avg("train_error"), marker="o", label="train error")
        ax1.plot(widths, avg("test_error"), marker="o", label="test error")
        ax1.set(xscale="log", xlabel="width h", ylabel="error", title="digits, trained to CE 0.01")
        ax1.legend(fontsize=8)
        for i, key in enumerate(MEASURES):
            values = np.array(avg(key))
            ax2.plot(widths, values / values[0], marker="o", color=f"C{i}", label=key)
        ax2.set(xscale="log", yscale="log", xlabel="width h", ylabel="value / value at smallest h",
                title="margin-normalized capacity vs parameters")
        ax2.legend(fontsize=8)
        fig.tight_layout()
        return fig


def _forward(U, V, X):
    """(pre-activations (S, n, h), outputs (S, n, c)) of f(x) = V relu(U x)."""
    pre = torch.matmul(X, U.mT)
    return pre, torch.matmul(torch.relu(pre), V.mT)


def _train(U, V, X, y, steps: int, lr: float):
    """Full-batch GD on the mean cross-entropy, all seeds at once. Every ``_CHECK_EVERY``
    steps the seeds whose training cross-entropy is <= STOP_LOSS leave the batch, their
    weights taken then (what each would get alone: every product is batch-invariant); the
    rest go on, to ``steps``. Returns the stopped U, V and the steps each seed used.

    The step works on transposed activations, (S, h, n) and (S, c, n): a softmax over the
    c = 10 classes along a middle axis is vectorized over the n points, 5x faster on the CPU
    than along the last axis."""
    S, n = X.shape[0], X.shape[1]
    # Contiguous, so that a seed's rows have one layout batched, compacted or alone.
    onehot_t = torch.nn.functional.one_hot(y, CLASSES).to(X.dtype).mT.contiguous()
    X_t = X.mT.contiguous()
    stopped_U, stopped_V = U.clone(), V.clone()
    used = [steps] * S
    rows = list(range(S))  # the seeds still training, in batch order
    for t in range(1, steps + 1):
        pre_t = torch.matmul(U, X_t)  # (S, h, n)
        act_t = torch.relu(pre_t)
        G_t = (torch.softmax(torch.matmul(V, act_t), -2) - onehot_t) / n  # ∂L/∂f, (S, c, n)
        grad_V = torch.matmul(G_t, act_t.mT)
        grad_U = torch.matmul((pre_t > 0) * torch.matmul(V.mT, G_t), X)
        U, V = U - lr * grad_U, V - lr * grad_V
        if t % _CHECK_EVERY == 0 or t == steps:
            out = _forward(U, V, X)[1]
            # Per seed: a reduction's rounding may depend on how many rows it spans. One host
            # sync for the batch.
            losses = torch.stack([torch.nn.functional.cross_entropy(out[j], y[j])
                                  for j in range(len(rows))]).tolist()
            keep = []
            for j, k in enumerate(rows):
                if t == steps or losses[j] <= STOP_LOSS:
                    stopped_U[k], stopped_V[k], used[k] = U[j], V[j], t
                else:
                    keep.append(j)
            if not keep:
                break
            if len(keep) < len(rows):
                rows = [rows[j] for j in keep]
                U, V, X, X_t, y, onehot_t = (a[keep] for a in (U, V, X, X_t, y, onehot_t))
    return stopped_U, stopped_V, used


def _measures(U, V, U0, X, y, Xt, yt) -> dict[str, float]:
    """Errors, the γ-quantile margin and the margin-normalized capacity measures of one net."""
    _, out = _forward(U[None], V[None], X[None])
    _, out_t = _forward(U[None], V[None], Xt[None])
    train_margins = margins(out[0], y)
    gamma = float(torch.quantile(train_margins, MARGIN_QUANTILE))
    n, h, d = X.shape[0], U.shape[0], U.shape[1]
    metrics = {
        "train_loss": float(torch.nn.functional.cross_entropy(out[0], y)),
        "train_error": float((train_margins <= 0).double().mean()),
        "test_error": float((out_t[0].argmax(-1) != yt).double().mean()),
        "margin": gamma, "params": float(h * (d + CLASSES)),
    }
    if gamma > 0:
        # The bounds are post-hoc scalars of small matrices: computed on the CPU.
        U, V, U0, X = (t.detach().cpu() for t in (U, V, U0, X))
        V0 = torch.zeros_like(V)  # the spectral reference of the second layer: none
        metrics.update(
            neyshabur=neyshabur_two_layer_rademacher(U, V, U0, X, gamma),
            golowich=golowich_rademacher([U, V], 1.0, n) / gamma,
            spectral=spectral_complexity([U, V], [U0, V0]) / gamma,
            path_norm=path_norm([U, V]) / gamma)
    else:  # no positive margin: every margin bound is vacuous
        metrics.update(neyshabur=math.inf, golowich=math.inf, spectral=math.inf, path_norm=math.inf)
    return metrics


def _spearman(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) < 3 or not all(map(math.isfinite, list(a) + list(b))):
        return math.nan
    return float(stats.spearmanr(a, b).statistic)


CLAIM = WidthGeneralization()
