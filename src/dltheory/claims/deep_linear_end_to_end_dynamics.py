"""A balanced deep linear net moves its end-to-end matrix by a preconditioned gradient step.

Arora, Cohen, Hazan, "On the Optimization of Deep Networks: Implicit Acceleration by
Overparameterization", ICML 2018, Theorem 1: if the layers of ``W_e = W_N ⋯ W_1`` start
balanced (``W_{j+1}ᵀW_{j+1} = W_j W_jᵀ``), gradient flow on the layers moves the end-to-end
matrix by

    dW_e/dt = −Σ_j (W_e W_eᵀ)^{(j−1)/N} ∇L(W_e) (W_eᵀW_e)^{(N−j)/N},

so one step of gradient descent with step η changes W_e by −η times that sum plus O(η²)
(the first-order term of the product of the updated layers is this sum exactly when the
layers are balanced). Without balancedness the first-order term is a different
preconditioner and the deviation from the formula is O(η).

Setup: least squares ``L(W_e) = (1/2n)‖X W_eᵀ − Y‖²`` on Gaussian data with a random
teacher, square layers of width d. For each seed, one GD step on the layers from a balanced
init (Arora et al. 2019, Procedure 1) at every η of a log grid; the actual change of W_e
is compared with the formula in float64 and log(deviation) is fitted against log η.
Negative control: the same from an i.i.d. Gaussian (unbalanced) init. Seeds run batched.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from dltheory.claims.base import Claim, Outcome, Results, Verdict
from dltheory.engine import Sweep
from dltheory.errors import ConfigError
from dltheory.models.deep_linear import DeepLinear, matmul, preconditioned_gradient

_PROFILES = {
    "smoke": dict(base=dict(d=4, n=40), depths=[2, 3]),
    "quick": dict(base=dict(d=8, n=100), depths=[2, 3, 4]),
    "full": dict(base=dict(d=32, n=400), depths=[2, 3, 4, 6, 8]),
}
_SEEDS = {"smoke": 3, "quick": 8, "full": 32}

# Criterion constants, fixed from the theorem before running (not tuned on results).
_ETA_RANGE = (-2.0, -5.0)  # η·λ_max(Σ̂) from 1e-2 down to 1e-5: the asymptotic regime,
_N_ETAS = 7  # where round-off (~1e-16·‖W_e‖) is still far below the η² term
_SLOPE_BALANCED = (1.9, 2.1)  # Theorem 1: the deviation is O(η²)
_SLOPE_CONTROL = (0.9, 1.1)  # unbalanced: the first-order terms differ, O(η)
_BALANCE_TOL = 1e-10  # the balanced init must be balanced (a check on the construction)


class DeepLinearEndToEndDynamics(Claim):
    id = "deep-linear-end-to-end-dynamics"
    title = "Balanced deep linear nets: end-to-end matrix follows the preconditioned update"
    source = ("S. Arora, N. Cohen, E. Hazan, \"On the Optimization of Deep Networks: Implicit "
              "Acceleration by Overparameterization\", ICML 2018, Theorem 1.")
    statement = ("For a depth-N linear network with balanced initialization, one gradient "
                 "descent step on the layers moves the end-to-end matrix W_e by "
                 "−η Σ_j (W_eW_eᵀ)^((j−1)/N) ∇L(W_e) (W_eᵀW_e)^((N−j)/N) up to O(η²).")
    criterion = (
        "For every depth and seed, the least-squares slope of log ‖ΔW_e(actual) − "
        "ΔW_e(formula)‖_F against log η over η·λ_max(Σ̂) ∈ [1e-5, 1e-2] (7 points) lies in "
        "[1.9, 2.1], and the balanced init is balanced to 1e-10. Control: from an i.i.d. "
        "Gaussian (unbalanced) init the slope lies in [0.9, 1.1] (an O(η) deviation: the "
        "formula no longer describes the dynamics)."
    )
    batched = True

    def sweep(self, profile: str) -> Sweep:
        spec = _PROFILES[profile]
        configs = Sweep.grid(spec["base"], {"depth": spec["depths"]})
        return Sweep(configs, list(range(_SEEDS[profile])), profile, self.id)

    def validate(self, config: Mapping[str, Any]) -> None:
        if config["depth"] < 2:
            raise ConfigError(f"depth must be >= 2 (depth 1 is the linear model, for which the "
                              f"formula is plain GD), got {config['depth']}")
        if config["d"] < 1 or config["n"] < config["d"]:
            raise ConfigError(f"need d >= 1 and n >= d, got d={config['d']}, n={config['n']}")

    # -- run -------------------------------------------------------------------------
    def run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        d, n, N = config["d"], config["n"], config["depth"]
        gens = [self.generator(config, s, device) for s in seeds]
        # Each seed draws its data, teacher, then the two nets, from its own generator.
        X = torch.stack([torch.randn(n, d, generator=g, dtype=torch.float64, device=device)
                         for g in gens])
        teacher = torch.stack([torch.randn(d, d, generator=g, dtype=torch.float64,
                                           device=device) / math.sqrt(d) for g in gens])
        Y = matmul(X, teacher.mT)
        dims = [d] * (N + 1)
        # Both inits give end-to-end entries of variance 1/d (a product of N i.i.d.
        # N(0, 1/d) square matrices has that variance too).
        nets = {
            "balanced": DeepLinear(dims, generators=gens, init="balanced", scale=d ** -0.5,
                                   device=device),
            "control": DeepLinear(dims, generators=gens, init="gaussian", scale=d ** -0.5,
                                  device=device),
        }
        XtX = matmul(X.mT, X) / n
        lam_max = torch.stack([torch.linalg.eigvalsh(M)[-1] for M in XtX])
        unit_etas = np.logspace(*_ETA_RANGE, _N_ETAS)
        curves = [{"eta_unit": unit_etas.tolist()} for _ in seeds]
        metrics: list[dict[str, Any]] = [{} for _ in seeds]
        for name, net in nets.items():
            with torch.no_grad():
                W_e = net.end_to_end()
                G = matmul((matmul(X, W_e.mT) - Y).mT, X) / n  # ∇L(W_e) = (W_e Xᵀ − Yᵀ) X / n
                grads = net.layer_gradients(G)
                P = preconditioned_gradient(W_e, G, N)
                devs, rels = [], []
                for c in unit_etas:
                    eta = (c / lam_max)[:, None, None]
                    W_next = net.weights[0] - eta * grads[0]
                    for W, dW in zip(net.weights[1:], grads[1:]):
                        W_next = matmul(W - eta * dW, W_next)
                    miss = (W_next - W_e) + eta * P
                    devs.append(torch.linalg.matrix_norm(miss))
                    rels.append(devs[-1] / torch.linalg.matrix_norm(eta * P))
                balance = net.balancedness()
            for i in range(len(seeds)):
                dev = np.array([float(t[i]) for t in devs])
                slope = float(np.polyfit(np.log(unit_etas), np.log(dev), 1)[0])
                curves[i][f"dev_{name}"] = dev.tolist()
                metrics[i].update({
                    f"slope_{name}": slope,
                    f"rel_dev_{name}_min_eta": float(rels[-1][i]),
                    f"balancedness_{name}": float(balance[i]),
                })
        return [Outcome(m, c) for m, c in zip(metrics, curves)]

    # -- judge -----------------------------------------------------------------------
    def judge(self, results: Results) -> Verdict:
        if not results:
            return Verdict.nothing_to_judge(self.criterion)
        m = [r.metrics for r in results]
        checks = {
            "balanced: deviation O(η²)": all(
                _SLOPE_BALANCED[0] <= x["slope_balanced"] <= _SLOPE_BALANCED[1] for x in m),
            "balanced init balanced": all(x["balancedness_balanced"] <= _BALANCE_TOL for x in m),
            "control: deviation O(η)": all(
                _SLOPE_CONTROL[0] <= x["slope_control"] <= _SLOPE_CONTROL[1] for x in m),
        }
        failed = [k for k, ok in checks.items() if not ok]
        parts = []
        for depth in sorted({r.config["depth"] for r in results}):
            mm = [r.metrics for r in results.where(depth=depth)]
            sb = [x["slope_balanced"] for x in mm]
            sc = [x["slope_control"] for x in mm]
            parts.append(f"N={depth}: slope {np.median(sb):.3f} [{min(sb):.3f}, {max(sb):.3f}] "
                         f"vs control {np.median(sc):.3f} [{min(sc):.3f}, {max(sc):.3f}], "
                         f"relative deviation at η=1e-5/λ: "
                         f"{np.median([x['rel_dev_balanced_min_eta'] for x in mm]):.1e} vs "
                         f"{np.median([x['rel_dev_control_min_eta'] for x in mm]):.1e}")
        measured = (f"fitted η-slope of the deviation, median [min, max] over {len(m)} runs: "
                    + "; ".join(parts))
        if failed:
            measured += "; failed: " + ", ".join(failed)
        slopes = [x["slope_balanced"] for x in m]
        return Verdict(not failed, measured, self.criterion, len(m),
                       details={"checks": checks, "median_slope_balanced": float(np.median(slopes)),
                                "median_slope_control": float(np.median(
                                    [x["slope_control"] for x in m]))})

    # -- figure ----------------------------------------------------------------------
    def figure(self, results: Results):
        import matplotlib.pyplot as plt

        depths = sorted({r.config["depth"] for r in results})
        fig, axes = plt.subplots(1, len(depths), figsize=(3.6 * len(depths), 3.4), squeeze=False)
        for ax, depth in zip(axes[0], depths):
            runs = results.where(depth=depth)
            for k, r in enumerate(runs):
                eta = np.array(r.curves["eta_unit"])
                ax.loglog(eta, r.curves["dev_balanced"], color="C0", alpha=0.5,
                          label="balanced init" if k == 0 else None)
                ax.loglog(eta, r.curves["dev_control"], color="C3", alpha=0.5,
                          label="Gaussian init (control)" if k == 0 else None)
            eta = np.array(runs[0].curves["eta_unit"])
            for power, key, style in ((2, "dev_balanced", "k--"), (1, "dev_control", "k:")):
                anchor = np.median([r.curves[key][-1] for r in runs])
                ax.loglog(eta, anchor * (eta / eta[-1]) ** power, style, label=f"slope {power}")
            ax.set(xlabel="η · λ_max(Σ̂)", ylabel="‖ΔW_e − ΔW_e(Thm 1)‖_F", title=f"depth N={depth}")
            ax.legend(fontsize=7)
        fig.tight_layout()
        return fig


CLAIM = DeepLinearEndToEndDynamics()
