"""Automatic differentiation at kinks: PyTorch's chain rule is wrong, the directional one is not.

Kakade & Lee (NeurIPS 2018): there is no chain rule for Clarke subgradients — PyTorch
returns 0 for d/dx [relu(x) − relu(−x)] at 0, whose true derivative is 1 — but choosing at
every kink the piece active in a random direction v gives lim_{ε↓0} ∇f(x + εv), a correct
subgradient. Bertoin et al. (NeurIPS 2021) showed such ties are not a curiosity: in low
precision, exact zeros of pre-activations occur in training, and relu'(0) changes results.

Setup, part 1 (programs with known answers): identities written with kinks, a max minus the
max of a permutation of its (tied) input, and ReLU networks with small-integer weights on
integer inputs (ties everywhere). For many directions v, ``subgradient(direction=v)`` and
PyTorch's default gradient are compared with an independent reference: the float64 gradient
at params + εv, a point checked to lie on no kink. Negative control: PyTorch's default.

Part 2 (ties in training, Bertoin et al.): a ReLU MLP trained by SGD for one epoch on
scikit-learn's digits (pixels / 16) in float64 / float32 / bfloat16 (float16 in the full
profile), counting the SGD steps in which some pre-activation is exactly 0 and those in
which relu'(0) = 0 vs 1 changes the gradient.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from dltheory.autodiff import subgradient
from dltheory.claims.base import Claim, Outcome, Results, Verdict
from dltheory.engine import Sweep
from dltheory.errors import ConfigError

_DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16,
           "float16": torch.float16}
_EPS = 1e-7  # reference offset along v (float64); kinks of the programs are ≥ ~1e-2 away
_TOL = 1e-6  # agreement with the reference (float64 arithmetic on small integers)

# float16 matmuls have no fast CPU kernel here (≈0.15 GFLOP/s): float16 runs only in full.
_PROFILES = {
    "smoke": dict(directions=8, net_width=6, net_dim=3, widths=[64], batches=[64],
                  precisions=["float64", "bfloat16"], steps=40),
    "quick": dict(directions=64, net_width=16, net_dim=4, widths=[256], batches=[16, 64, 256],
                  precisions=["float64", "float32", "bfloat16"], steps=300),
    "full": dict(directions=256, net_width=64, net_dim=8, widths=[256, 2048],
                 batches=[16, 64, 256], precisions=list(_DTYPES), steps=300),
}
_SEEDS = {"smoke": 2, "quick": 3, "full": 10}


def _integer_relu_net(width: int, dim: int, gen: torch.Generator):
    """A two-layer ReLU net with weights in {−2..2}, as a function of its input x."""
    W1 = torch.randint(-2, 3, (width, dim), generator=gen).double()
    W1[W1.abs().sum(1) == 0, 0] = 1.0  # no zero row: a kink no direction leaves
    w2 = torch.randint(-2, 3, (width,), generator=gen).double()
    x0 = torch.randint(-2, 3, (dim,), generator=gen).double()
    return (lambda x: w2 @ torch.relu(W1 @ x) + torch.amax(W1 @ x) - torch.relu(W1[0] @ x)), \
        x0, (lambda x: torch.cat([W1 @ x, (W1 @ x).amax(0, keepdim=True) - W1 @ x]))


def _programs(config: Mapping[str, Any], gen: torch.Generator):
    """(name, program, point, kink arguments) with exact ties at the point."""
    zero = torch.zeros(1, dtype=torch.float64)
    perm = torch.tensor([1, 0, 2])
    net, x0, args = _integer_relu_net(config["net_width"], config["net_dim"], gen)
    ident = lambda x: x  # noqa: E731
    return [
        ("relu(x) − relu(−x)", lambda x: (torch.relu(x) - torch.relu(-x)).sum(), zero, ident),
        ("|x| − relu(x) − relu(−x)", lambda x: (x.abs() - torch.relu(x) - torch.relu(-x)).sum(),
         zero, ident),
        ("max(v) − max(Pv)", lambda v: v.max(dim=0).values - v[perm].max(dim=0).values,
         torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64),
         lambda v: torch.stack([v[0] - v[1], v[1] - v[0]])),
        ("integer ReLU net", net, x0, args),
    ]


def _program_checks(config, gen) -> dict[str, Any]:
    ours_ok, torch_ok, total = {}, {}, {}
    for name, program, point, kink_args in _programs(config, gen):
        ours_ok[name] = torch_ok[name] = total[name] = 0
        x = point.clone().requires_grad_(True)
        (default,) = torch.autograd.grad(program(x), x)
        for _ in range(config["directions"]):
            v = torch.randn(point.shape, generator=gen, dtype=torch.float64)
            shifted = point + _EPS * v
            if bool((kink_args(shifted).abs() < 1e-12).any()):
                continue  # the reference point sits on a kink: skip this v (never seen)
            xr = shifted.clone().requires_grad_(True)
            (reference,) = torch.autograd.grad(program(xr), xr)
            ours = subgradient(program, point, direction=v)
            total[name] += 1
            ours_ok[name] += bool(torch.allclose(ours, reference, rtol=0, atol=_TOL))
            torch_ok[name] += bool(torch.allclose(default, reference, rtol=0, atol=_TOL))
    return {"ours_ok": ours_ok, "torch_ok": torch_ok, "total": total}


def _relu_one_at_zero(x: torch.Tensor) -> torch.Tensor:
    """relu with relu'(0) = 1 (PyTorch uses 0): same values, other backward at ties."""
    return torch.where(x >= 0, x, torch.zeros_like(x))


def _digits(dtype, gen):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    # pixels / 16, as Bertoin et al. scale MNIST to [0, 1]: exact binary fractions and an
    # exactly-zero background, the inputs on which their ties arise
    order = torch.randperm(len(y), generator=gen)
    return torch.tensor(X / 16.0, dtype=dtype)[order], torch.tensor(y)[order]


def _tie_experiment(precision: str, width: int, batch: int, steps: int, gen) -> dict:
    """SGD (lr 0.1) on digits, cycling over the shuffled set; count the steps with an
    exact-zero pre-activation and those whose gradient changes with relu'(0)."""
    dtype = _DTYPES[precision]
    X, y = _digits(dtype, gen)
    per_epoch = len(y) // batch
    dims = [64, width, width, 10]
    params = []
    for i in range(3):
        bound = 1 / math.sqrt(dims[i])
        W = (torch.rand(dims[i + 1], dims[i], generator=gen, dtype=torch.float64) * 2 - 1) * bound
        b = (torch.rand(dims[i + 1], generator=gen, dtype=torch.float64) * 2 - 1) * bound
        params += [W.to(dtype).requires_grad_(True), b.to(dtype).requires_grad_(True)]

    def forward(xb, act):
        h, zeros = xb, 0
        for i in range(2):
            z = F.linear(h, params[2 * i], params[2 * i + 1])
            zeros += int((z == 0).sum())
            h = act(z)
        return F.linear(h, params[4], params[5]), zeros

    tie_batches = changed = batches = 0
    for step in range(steps):
        start = (step % per_epoch) * batch
        xb, yb = X[start:start + batch], y[start:start + batch]
        out, zeros = forward(xb, torch.relu)
        grads = torch.autograd.grad(F.cross_entropy(out.float(), yb), params)
        batches += 1
        if zeros:
            tie_batches += 1
            out1, _ = forward(xb, _relu_one_at_zero)
            grads1 = torch.autograd.grad(F.cross_entropy(out1.float(), yb), params)
            changed += any(not torch.equal(a, b) for a, b in zip(grads, grads1))
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= 0.1 * g
    return {"batches": batches, "tie_batches": tie_batches, "changed_batches": changed}


class AutodiffKinkCorrectness(Claim):
    id = "autodiff-kink-correctness"
    title = "Correct derivatives at kinks: the directional chain rule vs PyTorch"
    source = ("S. Kakade, J. D. Lee, \"Provably correct automatic subdifferentiation for "
              "qualified programs\", NeurIPS 2018; D. Bertoin, J. Bolte, S. Gerchinovitz, "
              "E. Pauwels, \"Numerical influence of ReLU'(0) on backpropagation\", NeurIPS 2021.")
    statement = ("Randomized directional automatic differentiation returns lim ∇f(x + εv), a "
                 "correct subgradient, on programs where PyTorch's chain rule is wrong (0 for "
                 "d/dx[relu(x) − relu(−x)] at 0); exact ties do occur in training, mostly in "
                 "low precision.")
    criterion = ("Part 1: dltheory.subgradient(direction=v) equals the float64 gradient at "
                 "x + 1e-7·v (a point on no kink) for 100% of programs × directions in every "
                 "seed; PyTorch's default gradient is wrong on a positive fraction (the "
                 "control; reported). Part 2 (Bertoin et al.): the share of SGD batches with an "
                 "exact-zero pre-activation is 0 in float64 and larger in each 16-bit format "
                 "run than in float32 (reported per precision, width and batch size).")

    def sweep(self, profile: str) -> Sweep:
        p = _PROFILES[profile]
        programs = {"part": "programs", "directions": p["directions"], "net_width": p["net_width"],
                    "net_dim": p["net_dim"], "precision": "float64", "width": 0, "batch": 0,
                    "steps": p["steps"]}
        ties = [{**programs, "part": "ties", "precision": prec, "width": w, "batch": b}
                for prec in p["precisions"] for w in p["widths"] for b in p["batches"]]
        return Sweep([programs, *ties], list(range(_SEEDS[profile])), profile, self.id)

    def validate(self, config: Mapping[str, Any]) -> None:
        if config["precision"] not in _DTYPES:
            raise ConfigError(f"precision must be one of {', '.join(_DTYPES)} "
                              f"(got {config['precision']!r})")
        if config["directions"] < 1:
            raise ConfigError(f"directions must be >= 1 (got {config['directions']})")
        if config["part"] == "ties" and not (config["width"] >= 1 and config["batch"] >= 1):
            raise ConfigError("width and batch must be >= 1")

    def run(self, config: Mapping[str, Any], seed: int, device: str) -> Outcome:
        gen = self.generator(config, seed)
        if config["part"] == "programs":
            checks = _program_checks(config, gen)
            total = sum(checks["total"].values())
            metrics = {
                "ours_correct": sum(checks["ours_ok"].values()) / total,
                "torch_correct": sum(checks["torch_ok"].values()) / total,
                "checked": total,
                **{f"torch_correct[{k}]": checks["torch_ok"][k] / max(1, v)
                   for k, v in checks["total"].items()},
                **{f"ours_correct[{k}]": checks["ours_ok"][k] / max(1, v)
                   for k, v in checks["total"].items()},
            }
            return Outcome(metrics)
        counts = _tie_experiment(config["precision"], config["width"], config["batch"],
                                 config["steps"], gen)
        return Outcome({**counts, "tie_share": counts["tie_batches"] / max(1, counts["batches"]),
                        "changed_share": counts["changed_batches"] / max(1, counts["batches"])})

    def judge(self, results: Results) -> Verdict:
        programs = results.where(part="programs")
        ties = results.where(part="ties")
        checks: dict[str, bool] = {}
        if programs:
            checks["dltheory 100% correct"] = all(r.metrics["ours_correct"] == 1.0 for r in programs)
            checks["PyTorch wrong on some"] = all(r.metrics["torch_correct"] < 1.0 for r in programs)
        share = {p: float(np.mean([r.metrics["tie_share"] for r in ties.where(precision=p)]))
                 for p in _DTYPES if ties.where(precision=p)}
        if "float64" in share:
            checks["no ties in float64"] = share["float64"] == 0.0
        if "float32" in share:
            low = [share[p] for p in ("bfloat16", "float16") if p in share]
            checks["16-bit tie more than float32"] = all(s > share["float32"] for s in low)
        ours = np.mean([r.metrics["ours_correct"] for r in programs]) if programs else float("nan")
        theirs = np.mean([r.metrics["torch_correct"] for r in programs]) if programs else float("nan")
        changed = {p: float(np.mean([r.metrics["changed_share"] for r in ties.where(precision=p)]))
                   for p in share}
        measured = (f"correct on {int(sum(r.metrics['checked'] for r in programs))} program × "
                    f"direction checks: dltheory {ours:.0%}, PyTorch {theirs:.0%}; share of SGD "
                    "batches with an exact-zero pre-activation: "
                    + ", ".join(f"{p} {s:.1%}" for p, s in share.items())
                    + "; with a gradient changed by relu'(0): "
                    + ", ".join(f"{p} {s:.1%}" for p, s in changed.items()))
        failed = [k for k, ok in checks.items() if not ok]
        if failed:
            measured += "; failed: " + ", ".join(failed)
        return Verdict(bool(checks) and not failed, measured, self.criterion, len(results),
                       details={"checks": checks, "tie_share": share, "changed_share": changed})

    def figure(self, results: Results):
        import matplotlib.pyplot as plt

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
        programs = results.where(part="programs")
        if programs:
            names = [k[len("ours_correct["):-1] for k in programs[0].metrics
                     if k.startswith("ours_correct[")]
            ours = [np.mean([r.metrics[f"ours_correct[{n}]"] for r in programs]) for n in names]
            theirs = [np.mean([r.metrics[f"torch_correct[{n}]"] for r in programs]) for n in names]
            pos = np.arange(len(names))
            ax1.barh(pos + 0.2, ours, 0.4, label="dltheory.subgradient", color="C0")
            ax1.barh(pos - 0.2, theirs, 0.4, label="PyTorch default", color="C3")
            ax1.set(yticks=pos, yticklabels=names, xlim=(0, 1.05), xlabel="fraction correct",
                    title="derivatives at kinks vs lim ∇f(x+εv)")
            ax1.legend(fontsize=8, loc="lower right")
        ties = results.where(part="ties")
        for k, prec in enumerate(p for p in _DTYPES if ties.where(precision=p)):
            rows = ties.where(precision=prec)
            labels = sorted({(r.config["width"], r.config["batch"]) for r in rows})
            vals = [np.mean([r.metrics["tie_share"] for r in rows.where(width=w, batch=b)])
                    for w, b in labels]
            ax2.bar(np.arange(len(labels)) + 0.2 * k, vals, 0.2, label=prec)
            ax2.set_xticks(np.arange(len(labels)) + 0.3, [f"w{w}/b{b}" for w, b in labels])
        ax2.set(ylabel="share of SGD batches with a tie", title="exact zeros by precision (digits)")
        ax2.legend(fontsize=8)
        fig.tight_layout()
        return fig


CLAIM = AutodiffKinkCorrectness()
