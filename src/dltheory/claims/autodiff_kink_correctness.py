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

Part 2 (Bertoin et al.'s measure): a ReLU MLP 64-w-w-10 on scikit-learn's digits (pixels /
16). At each random initialization, one pass over the training set in mini-batches, the
weights fixed; the initialization counts when some batch's gradient differs (bit for bit)
between relu'(0) = 0 (PyTorch's relu) and relu'(0) = 1 (``clamp(x, min=0)``). They found
35–49% of initializations in float32 on MNIST, all in 16-bit, none in float64; reported here
by precision, batch size and width. How often an exact zero occurs grows with the number of
pre-activations a pass computes (MNIST: 60000 samples; digits: 1500 × 2·width), so the rate
of exact zeros per 10⁶ pre-activations is reported too, to compare scales.

Part 3 (does it change the trained network?): train twice by SGD from the same init and
batch order in bfloat16 / float16, with relu'(0) = 0 and = 1, and compare final weights and
test accuracy; then the same pair under ``exact_kinks``, where a tie takes the piece active
in a random direction, whichever convention the op has: the two runs must coincide.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from functools import lru_cache
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from dltheory.autodiff import exact_kinks, subgradient
from dltheory.claims.base import Claim, Outcome, Results, Verdict
from dltheory.engine import Sweep
from dltheory.errors import ConfigError

_DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16,
           "float16": torch.float16}
_EPS = 1e-7  # reference offset along v (float64); kinks of the programs are ≥ ~1e-2 away
_TOL = 1e-6  # agreement with the reference (float64 arithmetic on small integers)

_TRAIN = 1500  # digits: the first 1500 of a shuffle train, the other 297 test
_PROFILES = {
    "smoke": dict(directions=8, net_width=6, net_dim=3, precisions=["float64", "bfloat16"],
                  widths=[32], batches=[64], inits=2, trained=["bfloat16"], train_width=32,
                  batch=64, epochs=1),
    "quick": dict(directions=32, net_width=16, net_dim=4, precisions=list(_DTYPES),
                  widths=[256], batches=[16, 64, 256], inits=4, trained=["bfloat16", "float16"],
                  train_width=256, batch=64, epochs=1),
    "full": dict(directions=256, net_width=64, net_dim=8, precisions=list(_DTYPES),
                 widths=[256, 2048], batches=[16, 64, 256], inits=10,
                 trained=["bfloat16", "float16"], train_width=2048, batch=64, epochs=10),
}
_SEEDS = {"smoke": 2, "quick": 3, "full": 10}
_SYSTEMATIC = 0.5  # "systematic at 16 bits" (Bertoin et al.): at least half the inits


def _integer_relu_net(width: int, dim: int, gen: torch.Generator):
    """A two-layer ReLU net with weights in {−2..2}, as a function of its input x."""
    W1 = torch.randint(-2, 3, (width, dim), generator=gen).double()
    W1[W1.abs().sum(1) == 0, 0] = 1.0  # no zero row: a kink no direction leaves
    w2 = torch.randint(-2, 3, (width,), generator=gen).double()
    x0 = torch.randint(-2, 3, (dim,), generator=gen).double()
    distinct = (W1[:, None] != W1[None, :]).any(-1)  # equal rows tie everywhere: no kink

    def kink_args(x):  # the relu arguments, and the differences of distinct entries of the max
        z = W1 @ x
        return torch.cat([z, (z[:, None] - z[None, :])[distinct]])

    return (lambda x: w2 @ torch.relu(W1 @ x) + torch.amax(W1 @ x) - torch.relu(W1[0] @ x)), \
        x0, kink_args


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
    """relu with relu'(0) = 1 (PyTorch's relu uses 0): ``clamp(x, min=0)``, whose backward
    is 1 at its bound. A clamp, so ``exact_kinks`` resolves its ties as it does relu's."""
    return torch.clamp(x, min=0)


_CONVENTIONS = {0: torch.relu, 1: _relu_one_at_zero}


@lru_cache(maxsize=1)
def _load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return torch.tensor(X / 16.0), torch.tensor(y)


def _digits(gen):
    """scikit-learn's digits, pixels / 16 (as Bertoin et al. scale MNIST to [0, 1]: exact
    binary fractions and an exactly-zero background), shuffled; (train, test) in float64."""
    X, y = _load_digits()
    order = torch.randperm(len(y), generator=gen)
    X, y = X[order], y[order]
    return (X[:_TRAIN], y[:_TRAIN]), (X[_TRAIN:], y[_TRAIN:])


def _init(width: int, gen, dtype, device) -> list[torch.Tensor]:
    """PyTorch's default Linear init (uniform ±1/√fan_in), drawn in float64 and rounded."""
    dims = [64, width, width, 10]
    params = []
    for i in range(3):
        bound = 1 / math.sqrt(dims[i])
        for shape in ((dims[i + 1], dims[i]), (dims[i + 1],)):
            p = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound
            params.append(p.to(device=device, dtype=dtype).requires_grad_(True))
    return params


def _forward(params, xb, act, count_zeros: bool = False):
    """The 64-w-w-10 MLP; with ``count_zeros``, also how many pre-activations are exactly 0
    (a host sync per layer, so training leaves it off)."""
    h, zeros = xb, 0
    for i in range(2):
        z = F.linear(h, params[2 * i], params[2 * i + 1])
        if count_zeros:
            zeros += z.numel() - int(z.count_nonzero())
        h = act(z)
    return F.linear(h, params[4], params[5]), zeros


def _batch_grad(params, xb, yb, act):
    out, _ = _forward(params, xb, act)
    return torch.autograd.grad(F.cross_entropy(out.float(), yb), params)


def _bertoin_measure(config, gen, device) -> dict[str, float]:
    """Bertoin et al.'s experiment: at random initializations, one pass over the training
    set in mini-batches; an initialization counts when some batch's gradient differs
    between relu'(0) = 0 and 1 (weights fixed during the pass; compared bit for bit)."""
    dtype = _DTYPES[config["precision"]]
    counts = {b: [0, 0, 0] for b in config["batches"]}  # inits changed, tie batches, batches
    zeros = evaluated = 0  # exact-zero pre-activations, all pre-activations (first batch size)
    for _ in range(config["inits"]):
        (X, y), _ = _digits(gen)
        X, y = X.to(device=device, dtype=dtype), y.to(device)
        params = _init(config["width"], gen, dtype, device)
        for b, (changed, ties, total) in counts.items():
            found = False
            for start in range(0, len(y) - b + 1, b):
                xb, yb = X[start:start + b], y[start:start + b]
                with torch.no_grad():
                    _, n_zero = _forward(params, xb, torch.relu, count_zeros=True)
                tie = n_zero > 0
                ties, total = ties + tie, total + 1
                if b == config["batches"][0]:
                    zeros, evaluated = zeros + n_zero, evaluated + 2 * config["width"] * len(yb)
                if tie and not found:  # only a tie can make the conventions differ
                    g0, g1 = (_batch_grad(params, xb, yb, act) for act in _CONVENTIONS.values())
                    found = any(not torch.equal(a, c) for a, c in zip(g0, g1))
            counts[b] = [changed + found, ties, total]
    return {**{f"changed_inits[{b}]": c[0] for b, c in counts.items()},
            **{f"tie_batch_share[{b}]": c[1] / c[2] for b, c in counts.items()},
            "ties_per_million": 1e6 * zeros / evaluated, "inits": config["inits"]}


def _train(params0, train, test, config, act, kinks_seed: int | None) -> tuple[list, float]:
    """SGD (lr 0.1) from params0 over the given batch order; ``kinks_seed``: under
    ``exact_kinks`` with that direction seed. Returns the final weights and test accuracy."""
    (X, y), (Xt, yt) = train, test
    params = [p.detach().clone().requires_grad_(True) for p in params0]
    b = config["batch"]
    mode = nullcontext() if kinks_seed is None else \
        exact_kinks(generator=torch.Generator().manual_seed(kinks_seed))
    with mode:
        for _ in range(config["epochs"]):
            for start in range(0, len(y) - b + 1, b):
                grads = _batch_grad(params, X[start:start + b], y[start:start + b], act)
                with torch.no_grad():
                    for p, g in zip(params, grads):
                        p -= 0.1 * g
    with torch.no_grad():
        out, _ = _forward(params, Xt, act)
    return [p.detach() for p in params], float((out.argmax(1) == yt).double().mean())


def _trained_pair(config, gen, device) -> dict[str, float]:
    """Train twice from one init and batch order, relu'(0) = 0 and = 1, with PyTorch's
    backward and under exact_kinks; whether the final weights and test accuracy differ."""
    dtype = _DTYPES[config["precision"]]
    (X, y), (Xt, yt) = _digits(gen)
    train = X.to(device=device, dtype=dtype), y.to(device)
    test = Xt.to(device=device, dtype=dtype), yt.to(device)
    params0 = _init(config["width"], gen, dtype, device)
    kinks_seed = int(torch.randint(2**31, (1,), generator=gen))
    metrics = {}
    for name, seed in (("plain", None), ("exact", kinks_seed)):
        (w0, acc0), (w1, acc1) = (_train(params0, train, test, config, act, seed)
                                  for act in _CONVENTIONS.values())
        metrics[f"weights_differ[{name}]"] = float(any(not torch.equal(a, c) for a, c in zip(w0, w1)))
        metrics[f"max_weight_change[{name}]"] = max(float((a.double() - c.double()).abs().max())
                                                     for a, c in zip(w0, w1))
        metrics[f"accuracy_relu0[{name}]"], metrics[f"accuracy_relu1[{name}]"] = acc0, acc1
    return metrics


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
                 "control; reported). Part 2 (Bertoin et al.'s measure, pooled over batch sizes "
                 "and widths): the share of initializations where some batch of one pass gets "
                 "a different gradient with relu'(0) = 0 vs 1 is 0 in float64, and in each "
                 "16-bit format ≥ 50% ('systematic') and ≥ float32's. Part 3: trained from one "
                 "init and batch order, the two conventions end at bit-identical weights under "
                 "exact_kinks in every 16-bit seed, while PyTorch's backward gives different "
                 "weights in some seed (the control).")

    def sweep(self, profile: str) -> Sweep:
        p = _PROFILES[profile]
        base = {"part": "programs", "directions": p["directions"], "net_width": p["net_width"],
                "net_dim": p["net_dim"], "precision": "float64", "width": 0, "batches": [],
                "inits": 0, "batch": 0, "epochs": 0}
        inits = [{**base, "part": "init", "precision": prec, "width": w, "batches": p["batches"],
                  "inits": p["inits"]} for prec in p["precisions"] for w in p["widths"]]
        trained = [{**base, "part": "trained", "precision": prec, "width": p["train_width"],
                    "batch": p["batch"], "epochs": p["epochs"]} for prec in p["trained"]]
        return Sweep([base, *inits, *trained], list(range(_SEEDS[profile])), profile, self.id)

    def validate(self, config: Mapping[str, Any]) -> None:
        if config["part"] not in ("programs", "init", "trained"):
            raise ConfigError(f"part must be programs, init or trained (got {config['part']!r})")
        if config["precision"] not in _DTYPES:
            raise ConfigError(f"precision must be one of {', '.join(_DTYPES)} "
                              f"(got {config['precision']!r})")
        if config["directions"] < 1:
            raise ConfigError(f"directions must be >= 1 (got {config['directions']})")
        if config["part"] == "init" and not (config["width"] >= 1 and config["inits"] >= 1
                                             and config["batches"]
                                             and all(1 <= b <= _TRAIN for b in config["batches"])):
            raise ConfigError(f"init part: width and inits must be >= 1 and batches in "
                              f"1..{_TRAIN} (got {config['batches']})")
        if config["part"] == "trained" and not (config["width"] >= 1 and config["epochs"] >= 1
                                                and 1 <= config["batch"] <= _TRAIN):
            raise ConfigError(f"trained part: width and epochs must be >= 1 and batch in 1..{_TRAIN}")

    def run(self, config: Mapping[str, Any], seed: int, device: str) -> Outcome:
        gen = self.generator(config, seed)
        if config["part"] == "init":
            return Outcome(_bertoin_measure(config, gen, device))
        if config["part"] == "trained":
            return Outcome(_trained_pair(config, gen, device))
        checks = _program_checks(config, gen)
        total = sum(checks["total"].values())
        return Outcome({
            "ours_correct": sum(checks["ours_ok"].values()) / total,
            "torch_correct": sum(checks["torch_ok"].values()) / total,
            "checked": total,
            **{f"torch_correct[{k}]": checks["torch_ok"][k] / max(1, v)
               for k, v in checks["total"].items()},
            **{f"ours_correct[{k}]": checks["ours_ok"][k] / max(1, v)
               for k, v in checks["total"].items()},
        })

    @staticmethod
    def _changed_share(rows: Results, batch: int | None = None) -> float:
        """Share of initializations with a changed batch (pooled over batch sizes if None)."""
        keys = lambda r: [f"changed_inits[{b}]" for b in r.config["batches"]  # noqa: E731
                          if batch is None or b == batch]
        changed = sum(r.metrics[k] for r in rows for k in keys(r))
        return changed / max(1, sum(r.metrics["inits"] * len(keys(r)) for r in rows))

    def judge(self, results: Results) -> Verdict:
        programs = results.where(part="programs")
        inits = results.where(part="init")
        trained = results.where(part="trained")
        checks: dict[str, bool] = {}
        if programs:
            checks["dltheory 100% correct"] = all(r.metrics["ours_correct"] == 1.0 for r in programs)
            checks["PyTorch wrong on some"] = all(r.metrics["torch_correct"] < 1.0 for r in programs)
        share = {p: self._changed_share(inits.where(precision=p))
                 for p in _DTYPES if inits.where(precision=p)}
        if "float64" in share:
            checks["float64: no init changed"] = share["float64"] == 0.0
        low = [p for p in ("bfloat16", "float16") if p in share]
        if low:
            checks["16-bit systematic (≥ 50% of inits)"] = all(share[p] >= _SYSTEMATIC for p in low)
            checks["16-bit ≥ float32"] = all(share[p] >= share.get("float32", 0.0) for p in low)
        if trained:
            checks["exact_kinks: trained runs coincide"] = all(
                r.metrics["weights_differ[exact]"] == 0.0 for r in trained)
            checks["PyTorch: relu'(0) changes training"] = any(
                r.metrics["weights_differ[plain]"] == 1.0 for r in trained)
        parts = []
        if programs:
            ours = np.mean([r.metrics["ours_correct"] for r in programs])
            theirs = np.mean([r.metrics["torch_correct"] for r in programs])
            parts.append(f"correct on {int(sum(r.metrics['checked'] for r in programs))} program × "
                         f"direction checks: dltheory {ours:.0%}, PyTorch {theirs:.0%}")
        if inits:
            batches = sorted({b for r in inits for b in r.config["batches"]})
            n = int(sum(r.metrics["inits"] for r in inits.where(precision=inits[0].config["precision"])))
            parts.append(f"inits with a gradient changed by relu'(0) (Bertoin's measure, of {n}, "
                         f"batch {'/'.join(map(str, batches))}): " + ", ".join(
                             f"{p} " + "/".join(f"{self._changed_share(inits.where(precision=p), b):.0%}"
                                                for b in batches) for p in share))
            rate = {p: float(np.mean([r.metrics["ties_per_million"] for r in inits.where(precision=p)]))
                    for p in share}
            width = inits[0].config["width"]
            per_pass = 2 * width * _TRAIN / 1e6  # pre-activations per pass, millions
            parts.append(f"exact-zero pre-activations per 10⁶ (per pass at width {width}): "
                         + ", ".join(f"{p} {r:.2g} ({r * per_pass:.2g})" for p, r in rate.items()))
        for p in dict.fromkeys(r.config["precision"] for r in trained):
            rows = trained.where(precision=p)
            m = lambda k: [r.metrics[k] for r in rows]  # noqa: E731,B023
            acc = [abs(a - b) for a, b in zip(m("accuracy_relu0[plain]"), m("accuracy_relu1[plain]"))]
            parts.append(f"trained {p} ({rows[0].config['epochs']} epoch(s)): relu'(0) 0 vs 1 weights "
                         f"differ {int(sum(m('weights_differ[plain]')))}/{len(rows)}, test acc Δ ≤ "
                         f"{100 * max(acc):.1f} pt; under exact_kinks "
                         f"{int(sum(m('weights_differ[exact]')))}/{len(rows)}")
        measured = "; ".join(parts)
        failed = [k for k, ok in checks.items() if not ok]
        if failed:
            measured += "; failed: " + ", ".join(failed)
        return Verdict(bool(checks) and not failed, measured, self.criterion, len(results),
                       details={"checks": checks, "changed_init_share": share})

    def figure(self, results: Results):
        import matplotlib.pyplot as plt

        fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 3.8))
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
        inits = results.where(part="init")
        labels = sorted({(r.config["width"], b) for r in inits for b in r.config["batches"]})
        for k, prec in enumerate(p for p in _DTYPES if inits.where(precision=p)):
            rows = inits.where(precision=prec)
            vals = [self._changed_share(rows.where(width=w), b) for w, b in labels]
            ax2.bar(np.arange(len(labels)) + 0.2 * k, vals, 0.2, label=prec)
        ax2.set_xticks(np.arange(len(labels)) + 0.3, [f"w{w}/b{b}" for w, b in labels])
        ax2.set(ylabel="share of initializations", ylim=(0, 1.05),
                title="some batch's gradient changed by relu'(0)")
        ax2.legend(fontsize=8)
        trained = results.where(part="trained")
        for k, name in enumerate(("plain", "exact")):
            for j, prec in enumerate(dict.fromkeys(r.config["precision"] for r in trained)):
                rows = trained.where(precision=prec)
                diff = [100 * abs(r.metrics[f"accuracy_relu0[{name}]"] - r.metrics[f"accuracy_relu1[{name}]"])
                        for r in rows]
                ax3.scatter([2 * j + k] * len(diff), diff, color="C3" if name == "plain" else "C0",
                            label=("PyTorch" if name == "plain" else "exact_kinks") if j == 0 else None)
        precisions = list(dict.fromkeys(r.config["precision"] for r in trained))
        ax3.set_xticks(range(2 * len(precisions)),
                       [f"{p}\n{n}" for p in precisions for n in ("PyTorch", "exact_kinks")])
        ax3.set(ylabel="|test acc(relu'(0)=0) − test acc(relu'(0)=1)| (pt)",
                title="trained twice from one init (16-bit)")
        ax3.legend(fontsize=8)
        fig.tight_layout()
        return fig


CLAIM = AutodiffKinkCorrectness()
