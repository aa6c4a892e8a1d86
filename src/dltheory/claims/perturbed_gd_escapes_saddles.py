"""Perturbed gradient descent escapes strict saddles fast; plain GD near one lingers.

Jin, Ge, Netrapalli, Kakade, Jordan, "How to escape saddle points efficiently", ICML 2017:
Algorithm 2 (PGD) with the parameters of Theorem 3 finds an ε-second-order stationary
point in Õ(ℓ(f(x₀) − f*)/ε²) iterations; the heart of the proof (Lemma 11) is that from a
point with ‖∇f‖ ≤ g_thres and λ_min(∇²f) ≤ −√(ρε), one perturbation from the ball of radius
r followed by t_thres = χℓ/√(ρε) gradient steps escapes, where χ = 3 max(log(dℓΔ_f/(ε²δ)), 4):
the dimension enters only through log d. Plain GD (Lee et al. 2016) started at distance
ρ₀ from the saddle along a random direction u escapes only at the rate of the unstable
mode, (1 + ηγ)^t ρ₀|u₁|, so it needs log(1/ρ₀)/log(1 + ηγ) + O(1) steps and never leaves
from the saddle itself.

Setup: the strict saddle h(z) = z₁⁴/4 − γz₁²/2 + Σ_{i>1} z_i²/2 in dimension d (saddle at
0, λ_min = −γ, minima ±√γ e₁). On |z₁| ≤ 2√γ: ℓ = 11γ, ρ = 12√γ; Δ_f = f(0) − f* = γ²/4;
target ε = 0.01 (any ε < γ²/ρ makes the saddle not an ε-second-order stationary point).
Both methods use η = 1/ℓ. Escape time: the first step at which f has dropped by half the depth,
f(x_t) ≤ f(0) − Δ_f/2. Negative control: GD started exactly at the saddle (ρ₀ = 0).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
from torch.func import vmap

from dltheory.claims._many_starts import descend
from dltheory.claims.base import Claim, Outcome, Results, Verdict
from dltheory.engine import Sweep
from dltheory.errors import ConfigError
from dltheory.optim import GD, PerturbedGD, jin2017_parameters
from dltheory.problems import StrictSaddle

_OFFSETS = [1e-2, 1e-4, 1e-6, 1e-8, 1e-10, 1e-12]
_BASE = dict(gamma=1.0, epsilon=0.01, delta=0.1, gd_steps=600, offsets=_OFFSETS)
_PROFILES = {  # (dimensions, starts per run, runs)
    "smoke": ([2, 16], 8, 1),
    "quick": ([2, 8, 32, 128, 512], 20, 2),
    "full": ([2, 8, 32, 128, 512, 2048, 8192], 100, 4),
}

# Criterion constants, fixed from the theory before running.
_SLOPE_TOL = 0.10  # GD: d(steps)/d log(1/ρ₀) within 10% of 1/log(1 + ηγ) (the linearization)


def _constants(gamma: float) -> tuple[float, float, float]:
    """(ℓ, ρ, Δ_f) of h on |z₁| ≤ 2√γ: h'' ∈ [−γ, 11γ], |h'''| = 6|z₁| ≤ 12√γ, h(0) − h* = γ²/4."""
    return 11 * gamma, 12 * math.sqrt(gamma), gamma ** 2 / 4


def _escape_times(values: list[torch.Tensor], threshold: float) -> list[int | None]:
    """Per start, the first step whose loss is ≤ threshold (None if it never is)."""
    below = torch.stack(values) <= threshold  # (steps, K)
    first = below.double().argmax(0)
    return [int(t) if below[t, k] else None for k, t in enumerate(first.tolist())]


class PerturbedGDEscapesSaddles(Claim):
    id = "perturbed-gd-escapes-saddles"
    title = "Perturbed GD escapes strict saddles in time poly-log in d; plain GD lingers"
    source = ("C. Jin, R. Ge, P. Netrapalli, S. M. Kakade, M. I. Jordan, \"How to escape saddle points "
              "efficiently\", ICML 2017, Algorithm 2, Theorem 3 and Lemma 11; R. Ge, F. Huang, C. Jin, "
              "Y. Yuan, COLT 2015; J. D. Lee, M. Simchowitz, M. I. Jordan, B. Recht, COLT 2016.")
    statement = ("Started ρ₀-close to a strict saddle, gradient descent needs a number of steps that "
                 "grows like log(1/ρ₀) to leave it (and never leaves from the saddle itself), while "
                 "perturbed gradient descent leaves within t_thres = χℓ/√(ρε) steps, a bound that "
                 "depends on the dimension only through log d.")
    criterion = (
        "GD: for every dimension, the median over starts of the per-start slope of escape steps vs "
        f"log(1/ρ₀) (ρ₀ = 1e-2 … 1e-12) is 1/log(1 + ηγ) within {_SLOPE_TOL:.0%}; every start at "
        "ρ₀ = 0 is still exactly at the saddle after all its steps (control). PGD from the saddle "
        "itself (Jin et al. parameters, ε = 0.01, δ = 0.1): at most a δ fraction of starts take more "
        "than t_thres + 1 steps to escape (f ≤ f(0) − Δ_f/2), in every dimension; the median escape "
        "time grows with d no faster than the bound t_thres(d) does (fitted exponent of d at most the "
        "bound's over the same range). The fitted slope of the median vs log d is reported against the "
        "linearized prediction 1/(2 log(1 + ηγ)) (a uniform ball sample has |ξ₁| ~ r/√d)."
    )

    cpu_only = (
        "perturbed GD branches on each start's gradient norm every step: a host sync per step on a "
        "GPU")

    def sweep(self, profile: str) -> Sweep:
        dims, starts, runs = _PROFILES[profile]
        return Sweep([dict(_BASE, dim=d, starts=starts) for d in dims], list(range(runs)), profile, self.id)

    def validate(self, config: Mapping[str, Any]) -> None:
        gamma = config["gamma"]
        if config["dim"] < 1 or config["starts"] < 1 or config["gd_steps"] < 1 or gamma <= 0:
            raise ConfigError("dim, starts, gd_steps must be >= 1 and gamma > 0")
        _, rho, _ = _constants(gamma)
        if not 0 < config["epsilon"] < gamma ** 2 / rho:
            raise ConfigError(f"epsilon must be in (0, γ²/ρ = {gamma ** 2 / rho:.3g}) so that the saddle is "
                              f"not an ε-second-order stationary point (got {config['epsilon']})")
        if not 0 < config["delta"] < 1:
            raise ConfigError(f"delta must be in (0, 1) (got {config['delta']})")
        if not config["offsets"] or not all(0 < o < 1 for o in config["offsets"]):
            raise ConfigError(f"offsets must be a list of distances in (0, 1) (got {config['offsets']})")

    # -- run -------------------------------------------------------------------------
    def run(self, config: Mapping[str, Any], seed: int, device: str) -> Outcome:
        gen = self.generator(config, seed)
        d, K, gamma = config["dim"], config["starts"], config["gamma"]
        ell, rho, delta_f = _constants(gamma)
        problem = StrictSaddle(d, 1, gamma=gamma)
        loss = vmap(problem.loss)
        threshold = problem.loss(problem.saddle).item() - delta_f / 2
        offsets = list(config["offsets"]) + [0.0]
        u = torch.randn(K, d, generator=gen, dtype=torch.float64)
        u = u / u.norm(dim=1, keepdim=True)
        starts = torch.cat([o * u for o in offsets])  # offset-major: rows [i*K:(i+1)*K] share ρ₀

        gd_values: list[torch.Tensor] = []
        end = descend(loss, starts, lambda p: GD(p, lr=1 / ell), config["gd_steps"],
                      on_step=lambda t, v: gd_values.append(v))
        gd_times = _escape_times(gd_values, threshold)

        params = jin2017_parameters(d, ell=ell, rho=rho, epsilon=config["epsilon"], delta_f=delta_f,
                                    delta=config["delta"])
        pgd_values: list[torch.Tensor] = []
        descend(loss, torch.zeros(K, d, dtype=torch.float64),
                lambda p: PerturbedGD(p, **params, generator=gen), params["t_thres"] + 2,
                per_start=True,
                on_step=lambda t, v: pgd_values.append(v) or bool((v <= threshold).all()))
        pgd_times = _escape_times(pgd_values, threshold)

        log_inv = np.log(1 / np.array(config["offsets"]))
        slopes = []
        for k in range(K):
            times = [gd_times[i * K + k] for i in range(len(config["offsets"]))]
            slopes.append(float(np.polyfit(log_inv, times, 1)[0]) if None not in times else float("nan"))
        control = end[len(config["offsets"]) * K:]
        escaped = [t for t in pgd_times if t is not None]
        metrics = {
            "gd_slope_median": float(np.median(slopes)),
            "gd_slope_predicted": 1 / math.log(1 + gamma / ell),
            "gd_escaped_fraction": float(np.mean([t is not None
                                                  for t in gd_times[:len(config["offsets"]) * K]])),
            "control_escaped": sum(t is not None for t in gd_times[len(config["offsets"]) * K:]),
            "control_max_distance": float(control.norm(dim=1).max()),
            "gd_steps": config["gd_steps"],
            "pgd_t_thres": params["t_thres"],
            "pgd_radius": params["radius"],
            "pgd_late_fraction": float(np.mean([t is None or t > params["t_thres"] + 1 for t in pgd_times])),
            "pgd_escape_median": float(np.median(escaped)) if escaped else float("nan"),
            "pgd_escape_max": max(escaped) if escaped else None,
            "jin_total_bound": ell * delta_f / config["epsilon"] ** 2,
        }
        curves = {
            "offsets": list(config["offsets"]),
            "gd_escape_median": [float(np.median([gd_times[i * K + k] for k in range(K)]))
                                 if all(gd_times[i * K + k] is not None for k in range(K)) else None
                                 for i in range(len(config["offsets"]))],
            "pgd_escape": [float(t) if t is not None else None for t in pgd_times],
        }
        return Outcome(metrics, curves)

    # -- judge -----------------------------------------------------------------------
    def judge(self, results: Results) -> Verdict:
        by_dim: dict[int, list] = {}
        for r in results:
            by_dim.setdefault(r.config["dim"], []).append(r)
        dims = sorted(by_dim)
        checks = {
            "GD steps grow like log(1/ρ₀)/log(1+ηγ)": all(
                abs(r.metrics["gd_slope_median"] / r.metrics["gd_slope_predicted"] - 1) <= _SLOPE_TOL
                for r in results),
            "GD from the saddle never leaves (control)": all(
                r.metrics["control_escaped"] == 0 and r.metrics["control_max_distance"] == 0
                for r in results),
            "PGD escapes within t_thres": all(
                np.mean([r.metrics["pgd_late_fraction"] for r in by_dim[d]]) <= r0.config["delta"]
                for d in dims for r0 in by_dim[d][:1]),
        }
        medians = [float(np.median(np.concatenate([[x for x in r.curves["pgd_escape"] if x is not None]
                                                   for r in by_dim[d]]))) for d in dims]
        bounds = [by_dim[d][0].metrics["pgd_t_thres"] for d in dims]
        details: dict[str, Any] = {"dims": dims, "pgd_median": medians, "t_thres": bounds}
        slope_ratio = np.median([r.metrics['gd_slope_median'] / r.metrics['gd_slope_predicted']
                                 for r in results])
        measured = (f"GD slope/predicted median {slope_ratio:.3f} "
                    f"(predicted {results[0].metrics['gd_slope_predicted']:.2f} steps per nat); "
                    f"GD at ρ₀=0 escaped in {sum(r.metrics['control_escaped'] for r in results)} starts; "
                    f"PGD median escape {', '.join(f'd={d}: {m:.0f}' for d, m in zip(dims, medians))} "
                    f"(t_thres {bounds[0]}…{bounds[-1]}; "
                    f"total bound ℓΔ_f/ε² = {results[0].metrics['jin_total_bound']:.3g})")
        if len(dims) >= 2:
            log_d = np.log(dims)
            alpha = float(np.polyfit(log_d, np.log(medians), 1)[0])
            alpha_bound = float(np.polyfit(log_d, np.log(bounds), 1)[0])
            slope = float(np.polyfit(log_d, medians, 1)[0])
            predicted = results[0].metrics["gd_slope_predicted"] / 2
            checks["PGD escape grows with d no faster than the bound"] = alpha <= alpha_bound
            details.update(exponent=alpha, bound_exponent=alpha_bound, slope_log_d=slope,
                           slope_log_d_predicted=predicted)
            measured += (f"; fitted d-exponent {alpha:.3f} (bound's {alpha_bound:.3f}), slope vs log d "
                         f"{slope:.2f} steps (linearized prediction {predicted:.2f})")
        failed = [k for k, ok in checks.items() if not ok]
        if failed:
            measured += "; failed: " + ", ".join(failed)
        details["checks"] = checks
        return Verdict(not failed, measured, self.criterion, len(results), details=details)

    # -- figure ----------------------------------------------------------------------
    def figure(self, results: Results):
        import matplotlib.pyplot as plt

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        dims = sorted({r.config["dim"] for r in results})
        for i, d in enumerate(dims):
            r = next(r for r in results if r.config["dim"] == d)
            x = np.log(1 / np.array(r.curves["offsets"], dtype=float))
            y = np.array([np.nan if v is None else v for v in r.curves["gd_escape_median"]], dtype=float)
            ax1.plot(x, y, "o-", color=f"C{i}", label=f"GD, d={d}")
            pgd = [v for v in r.curves["pgd_escape"] if v is not None]
            ax1.axhline(np.median(pgd), color=f"C{i}", ls=":", lw=1)
        r = results[0]
        x = np.log(1 / np.array(r.curves["offsets"], dtype=float))
        ax1.plot(x, r.metrics["gd_slope_predicted"] * (x - x[0]) + ax1.lines[0].get_ydata()[0], "k--",
                 label="slope 1/log(1+ηγ)")
        ax1.set(xlabel="log(1/ρ₀)", ylabel="escape steps",
                title="GD lingers ~log(1/ρ₀); dotted: PGD from the saddle")
        ax1.legend(fontsize=7)
        for d in dims:
            times = np.concatenate([[v for v in r.curves["pgd_escape"] if v is not None]
                                    for r in results if r.config["dim"] == d])
            ax2.scatter(np.full(len(times), d) * np.exp(np.linspace(-0.1, 0.1, len(times))), times, s=5,
                        color="C0")
        bounds = [next(r for r in results if r.config["dim"] == d).metrics["pgd_t_thres"] for d in dims]
        ax2.plot(dims, bounds, "k--", label="t_thres (Jin et al. bound)")
        ax2.set(xscale="log", yscale="log", xlabel="dimension d", ylabel="PGD escape steps",
                title="PGD escape time vs dimension")
        ax2.legend(fontsize=8)
        fig.tight_layout()
        return fig


CLAIM = PerturbedGDEscapesSaddles()
