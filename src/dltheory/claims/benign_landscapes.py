"""For a family of non-convex problems all local minima are global: local search from random starts
finds the optimum.

The problems of Lee's list, each with the theorem that its landscape is benign (every local
minimum global, every saddle strict, so that GD from a random start converges to a global
minimizer by Lee et al. 2016/2019):

* quadratic-activation networks, width ≥ √(2N) — Du, Lee, ICML 2018, Theorem 3.1;
* matrix completion — Ge, Lee, Ma, NeurIPS 2016, Theorem 2.3;
* rank-k approximation (a two-layer linear network) — Baldi, Hornik, Neural Networks 1989;
* matrix sensing under RIP — Bhojanapalli, Neyshabur, Srebro, NeurIPS 2016, Theorem 3.1;
* phase retrieval, m ≳ n log³ n — Sun, Qu, Wright, FoCM 2018, Theorem 2.2;
* orthogonal tensor decomposition — Ge, Huang, Jin, Yuan, COLT 2015, Theorem 44;
* complete dictionary learning over the sphere — Sun, Qu, Wright, IEEE T-IT 2017, Theorem 2.3;
* max-cut SDP in Burer–Monteiro form, p(p+1)/2 > n — Boumal, Voroninski, Bandeira,
  NeurIPS 2016, Theorem 2;
* robust PCA with the ℓ1 loss — Li, Zhu, So, Vidal, SIAM J. Optim. 2020 (subgradient method);
* a one-hidden-layer ReLU network learned through the designed objective G of Ge, Lee, Ma
  (ICLR 2018, Theorem 2.3; population form, orthonormal teacher, c = 0.1).

Setup: every run is one random instance (the seed) and many random starts, run as one
stacked computation (``vmap`` of the problem's loss; GD, or Riemannian GD on the oblique
manifold for the problems on spheres). Success is the problem's own ``success`` criterion,
fixed in :mod:`dltheory.problems` before this claim: relative recovery error ≤ 1e-3 (5e-2 for
dictionary learning, whose minimizers carry an O(μ) bias), and for max-cut the value within
1e-4 relative of the SDP optimum solved by cvxpy (the independent answer), with the
Goemans–Williamson rounding's cut reported. Negative controls, where the theory's
assumption is dropped: matrix sensing with m below the n·r − r(r−1)/2 degrees of freedom,
max-cut with p = 1 (max-cut itself) and p = 2 < √(2n), and the plain square loss of the
ReLU teacher (spurious minima for m = d ≥ 6, Safran & Shamir 2018). The first two make the
optimum generically unreachable (≥ 90% failure required); for the last two the theory only
says the guarantee is lost (Waldspurger & Waters 2020 construct spurious optima for some
cost matrices when p(p+1)/2 + p ≤ n), so > 1% failure is required and the SDP rank is
reported. (A quadratic network narrower than √(2N) is not a control here: √(2N) is
sufficient, not necessary, and a planted narrow teacher keeps the landscape benign in
practice.)

Every failed start is diagnosed at its end point with the dense float64 (Riemannian)
Hessian: a spurious second-order critical point (the landscape is not benign at this
size), a saddle, or an unconverged run (a defect of the step budget). Step sizes of the
unconstrained smooth problems are min(lr, 1/ℓ*) with ℓ* the Hessian's λ_max at the ground
truth, as GD's convergence theory requires.

Findings at the quick scale (5 instances × 20 starts): every problem reaches its optimum in
100% of pairs except matrix completion at n = 12, p = 0.6, where 4 starts of one instance
stop at a second-order critical point with loss 0.035 > 0 (‖grad‖ ~ 1e-5, λ_min ~ −1e-6: a
spurious local minimum up to rounding; the incoherence regularizer is inactive there). The
sampling rate is far below Ge, Lee & Ma's p ≳ r⁶ log n / n, so the claim genuinely fails at
that size. The earlier matrix-sensing (80%) and quadratic-net (86%) failures were defects:
η above 2/ℓ* (a 2-cycle, a divergence) and a step budget too short for instances with small
η·σ_r(M*); both reach 100% with η = min(lr, 1/ℓ*) run to convergence. The plain ReLU
square loss shows no spurious minimum at d = 6 (0 of 100) and 2–3% at d = 8.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch.func import vmap

from dltheory import problems as P
from dltheory.claims._many_starts import descend, gradient_and_curvature
from dltheory.claims.base import Claim, Outcome, Results, Verdict
from dltheory.engine import Sweep
from dltheory.errors import ConfigError
from dltheory.optim import GD, RiemannianGD
from dltheory.problems import landscape_design as _relu


def _quadratic_net(size: int, gen):
    """Twice the d(d+1)/2 entries of a symmetric d×d matrix in samples (identifiable and well
    conditioned), and the width √(2N) of Du & Lee's theorem."""
    samples = 2 * size * (size + 1)
    return P.QuadraticNetwork(size, 2, math.ceil(math.sqrt(2 * samples)), samples, generator=gen)


# name -> (instance(size, generator), lr, steps, init scale, lr decay per step). For unconstrained
# smooth problems the step is min(lr, 1/ℓ*), ℓ* = λ_max of the Hessian at the ground truth: GD
# converges to a minimizer only if η < 2/ℓ* there (with lr alone, 1 of 5 sensing instances had
# ℓ* = 10.3 > 2/0.2 and GD 2-cycled around the truth; a quadratic-net instance diverged).
_PROBLEMS: dict[str, tuple[Callable, float, int, float, float]] = {
    # over-parametrized: the part of U outside M*'s range decays only sublinearly, so it must
    # start small (the error it leaves is about width · scale²)
    "quadratic-net": (_quadratic_net, 1.0, 20000, 1e-3, 1.0),
    "matrix-completion": (lambda n, g: P.MatrixCompletion(n, 2, 0.6, generator=g), 0.2, 2000, 1e-2, 1.0),
    "rank-k-approximation": (lambda n, g: P.LowRankApproximation(n, n - 2, 2, generator=g), 0.3, 1500, 0.1,
                             1.0),
    "matrix-sensing": (lambda n, g: P.MatrixSensing(n, 2, 8 * 2 * n, generator=g), 0.2, 400, 1e-2, 1.0),
    "phase-retrieval": (lambda n, g: P.PhaseRetrieval(n, 15 * n, generator=g), 0.1, 400, 0.1, 1.0),
    "tensor-decomposition": (lambda n, g: P.OrthogonalTensorDecomposition(n, generator=g), 0.1, 400, 1.0,
                             1.0),
    "dictionary-learning": (lambda n, g: P.DictionaryLearning(n, 16 * n ** 3, generator=g), 0.1, 400, 1.0,
                            1.0),
    "max-cut": (lambda n, g: P.MaxCutBurerMonteiro(n, generator=g), 0.1, 500, 1.0, 1.0),
    # non-smooth: the subgradient method with geometrically decaying steps (Li et al. 2020)
    "robust-pca": (lambda n, g: P.RobustPCA(n, 2, 0.1, generator=g), 5.0, 800, 0.5, 0.99),
    # Ge, Lee, Ma 2018, Theorem 2.3 with c = 0.1 (μ = c/κ, λ = a_max/c): population objective G
    "relu-landscape-design": (lambda n, g: _relu.ReLULandscapeDesign(n, c=0.1, generator=g), 1.0, 800, 1.0,
                              1.0),
}
# control name -> (problem it breaks, instance(size, generator), least failure fraction,
#                  (lr, steps) if they differ from the problem's, size if not the problem's first)
_CONTROLS: dict[str, tuple[str, Callable, float, tuple | None, int | None]] = {
    # fewer measurements than degrees of freedom: M* is not identifiable, recovery fails generically
    "matrix-sensing, m = n < n·r": ("matrix-sensing", lambda n, g: P.MatrixSensing(n, 2, n, generator=g), 0.9,
                                    None, None),
    # p = 1 is max-cut itself: the SDP value is reachable only if the SDP optimum has rank 1
    "max-cut, p = 1": ("max-cut", lambda n, g: P.MaxCutBurerMonteiro(n, 1, generator=g), 0.9, None, None),
    # p(p+1)/2 + p ≤ n: Waldspurger & Waters (2020) show spurious optima for *some* cost matrices,
    # and where the SDP optimum has rank > 2 it is unreachable; the theory does not say most
    # starts fail, only that the ≥ 99% guarantee is lost: the control must fail in > 1%
    "max-cut, p = 2": ("max-cut", lambda n, g: P.MaxCutBurerMonteiro(n, 2, generator=g), 0.01, (0.1, 2000),
                       None),
    # the plain square loss of the same teacher (output layer fixed at a*): spurious local minima
    # exist for m = d ≥ 6 (Safran & Shamir 2018) — again only the guarantee is lost: > 1%. At
    # d = 6 they are rare (0 of 100 starts here, ~0.3% in Safran & Shamir), so the control runs d = 8
    "relu square loss": ("relu-landscape-design", lambda n, g: _relu.ReLUSquareLoss(n, generator=g), 0.01,
                         (0.2, 3000), 8),
}
# quick runs the first size only: two sizes took over 10 minutes on the 2-core CPU
_SIZES = {"smoke": [0], "quick": [0], "full": [0, 1, 2]}
_SIZE_OF = {  # three sizes per problem; a profile takes the first ones
    "quadratic-net": [5, 7, 10], "matrix-completion": [12, 20, 40], "rank-k-approximation": [8, 16, 32],
    "matrix-sensing": [6, 10, 16], "phase-retrieval": [8, 16, 32], "tensor-decomposition": [4, 6, 8],
    "dictionary-learning": [4, 5, 6], "max-cut": [12, 20, 40], "robust-pca": [12, 20, 40],
    "relu-landscape-design": [6, 8, 10],
}
_RUNS = {"smoke": (1, 8), "quick": (5, 20), "full": (20, 50)}  # (instances, starts per instance)

# Criterion constants, fixed from the theory before running.
_SUCCESS = 0.99  # benign: at least 99% of (instance, start) pairs reach the global optimum
# Controls: each its own least failure fraction (see _CONTROLS), fixed from what the theory says
# breaks: 90% where the optimum is generically unreachable, > 1% where only the guarantee is lost.
# Failed starts are classified by the dense float64 Hessian at the end point:
_CHECK = 250  # every _CHECK steps a run checks whether all its starts succeeded, and stops if so
_STATIONARY = 1e-4  # ‖grad‖ ≤ this: a critical point; λ_min ≥ −this: second-order (a spurious minimum)


def _packing(example):
    """(flatten, unflatten) between a problem's params (tensor or dict) and one flat tensor."""
    if isinstance(example, torch.Tensor):
        return (lambda x: x), (lambda x: x)
    keys, shapes = list(example), [example[k].shape for k in example]
    sizes = [math.prod(s) for s in shapes]

    def unflatten(x):
        return {k: p.reshape(*x.shape[:-1], *s) for k, p, s in zip(keys, x.split(sizes, -1), shapes)}

    return (lambda d: torch.cat([d[k].reshape(*d[k].shape[:-len(s)], -1) for k, s in zip(keys, shapes)], -1),
            unflatten)


def _batched_loss(problem) -> Callable | None:
    """The loss of a stack of points (K, ...) -> (K,) without vmap, where one is known."""
    if hasattr(problem, "batched_loss"):
        return problem.batched_loss
    if isinstance(problem, P.QuadraticNetwork):  # ½·mean((‖Wx_i‖² − y_i)²), W of shape (K, width, d)
        X, y = problem.X, problem.y
        return lambda W: 0.5 * ((((X @ W.mT) ** 2).sum(-1) - y) ** 2).mean(-1)
    return None


def _local_smoothness(problem, one: Callable, flatten: Callable) -> float | None:
    """λ_max of the dense Hessian at the ground truth (unconstrained smooth problems), else None."""
    if problem.manifold is not None or isinstance(problem, P.RobustPCA):
        return None
    try:
        truth = flatten(problem.ground_truth)
    except Exception:  # no closed-form minimizer (none of the unconstrained problems here)
        return None
    H = torch.func.hessian(one)(truth.reshape(-1).reshape(truth.shape))
    return float(torch.linalg.eigvalsh(H.reshape(truth.numel(), truth.numel()))[-1])


def _classify_failures(problem, one: Callable, end: torch.Tensor, success, name: str) -> dict[str, Any]:
    """Counts of failed starts by the kind of point they stopped at (dense float64 Hessian).

    ``spurious``: ‖grad‖ ≤ _STATIONARY and λ_min ≥ −_STATIONARY (a second-order critical point
    that is not a global minimizer); ``saddle``: critical with λ_min < −_STATIONARY;
    ``unconverged``: ‖grad‖ > _STATIONARY (the step budget ended first); ``optimal_value``:
    critical with loss gap ≤ _STATIONARY but not recovered (the instance is not identifiable,
    or convergence is sublinear).
    Riemannian gradient and Hessian on the oblique manifold / sphere. Not for the non-smooth
    robust PCA (``unclassified``).
    """
    bad = [k for k, ok in enumerate(success) if not ok]
    counts = dict(spurious=0, saddle=0, unconverged=0, optimal_value=0, unclassified=0, spurious_loss_gap=0.0)
    if not bad:
        return counts
    if isinstance(problem, P.RobustPCA):
        counts["unclassified"] = len(bad)
        return counts
    points = end[torch.as_tensor(bad)]
    manifold = None if problem.manifold is None else "oblique"
    grad, lam = gradient_and_curvature(one, points, manifold)
    optimum = problem.global_min_value or 0.0
    for g, curvature, x in zip(grad.tolist(), lam.tolist(), points):
        gap = float(one(x)) - optimum
        if not math.isfinite(g) or g > _STATIONARY:
            counts["unconverged"] += 1
        elif gap <= _STATIONARY:  # the optimal value, away from the truth: not identifiable, or slow
            counts["optimal_value"] += 1
        elif curvature < -_STATIONARY:
            counts["saddle"] += 1
        else:
            counts["spurious"] += 1
            counts["spurious_loss_gap"] = max(counts["spurious_loss_gap"], gap)
    return counts


def _diagnosis(rs) -> str:
    """' (failures: 4 second-order critical, loss gap 0.035; 2 unconverged)' for a group of runs."""
    total = {k: sum(r.metrics.get(k, 0) for r in rs)
             for k in ("spurious", "saddle", "unconverged", "optimal_value", "unclassified")}
    gap = max((r.metrics.get("spurious_loss_gap", 0.0) for r in rs), default=0.0)
    words = []
    if total["spurious"]:
        words.append(f"{total['spurious']} at 2nd-order critical points above the optimum "
                     f"(loss gap ≤ {gap:.2g})")
    if total["saddle"]:
        words.append(f"{total['saddle']} at saddles")
    if total["unconverged"]:
        words.append(f"{total['unconverged']} unconverged")
    if total["optimal_value"]:
        words.append(f"{total['optimal_value']} at the optimal value but not recovered")
    if total["unclassified"]:
        words.append(f"{total['unclassified']} unclassified (non-smooth)")
    return f" (failures: {', '.join(words)})" if words else ""


class BenignLandscapes(Claim):
    id = "benign-landscapes"
    title = "All local minima are global: GD from random starts solves ten non-convex problems"
    source = ("J. D. Lee's list (talk, 2019): Du & Lee ICML 2018; Ge, Lee & Ma NeurIPS 2016; Baldi & "
              "Hornik 1989; Bhojanapalli, Neyshabur & Srebro NeurIPS 2016; Sun, Qu & Wright FoCM 2018 "
              "and IEEE T-IT 2017; Ge, Huang, Jin & Yuan COLT 2015; Boumal, Voroninski & Bandeira "
              "NeurIPS 2016; Li, Zhu, So & Vidal SIAM J. Optim. 2020.")
    statement = ("For quadratic networks, matrix completion, rank-k approximation, matrix sensing, phase "
                 "retrieval, orthogonal tensor decomposition, dictionary learning, Burer–Monteiro max-cut "
                 "and robust PCA, every local minimum is global, so local search from a random start "
                 "reaches the global optimum; where the theorem's assumption fails it need not.")
    criterion = (
        f"Every problem, every size: ≥ {_SUCCESS:.0%} of (random instance, random start) pairs meet the "
        "problem's success criterion (recovery error ≤ tolerance; max-cut: within 1e-4 of the cvxpy SDP "
        "value). Negative controls miss it in ≥ 90% of pairs where the optimum is generically "
        "unreachable (sensing with m < n·r − r(r−1)/2, max-cut with p = 1) and in > 1% where only the "
        "guarantee is lost (max-cut p = 2, the ReLU square loss). Failed starts are classified by the "
        f"dense Hessian: spurious 2nd-order critical point (‖grad‖, −λ_min ≤ {_STATIONARY:g}), saddle, "
        "or unconverged."
    )

    cpu_only = (
        "each run is one small instance (dimension ≤ 40) and its 8–50 starts; kernels that small "
        "are launch-bound on a GPU, and the max-cut reference is cvxpy")

    def sweep(self, profile: str) -> Sweep:
        runs, starts = _RUNS[profile]
        configs = [dict(problem=name, size=_SIZE_OF[name][i], control="", starts=starts)
                   for name in _PROBLEMS for i in _SIZES[profile]]
        configs += [dict(problem=base, size=size or _SIZE_OF[base][0], control=name, starts=starts)
                    for name, (base, _, _, _, size) in _CONTROLS.items()]
        return Sweep(configs, list(range(runs)), profile, self.id)

    def validate(self, config: Mapping[str, Any]) -> None:
        if config["problem"] not in _PROBLEMS:
            raise ConfigError(f"problem must be one of {', '.join(_PROBLEMS)} (got {config['problem']!r})")
        if config["control"] and config["control"] not in _CONTROLS:
            raise ConfigError(f"control must be empty or one of {', '.join(_CONTROLS)} "
                              f"(got {config['control']!r})")
        if config["starts"] < 1 or config["size"] < 4:
            raise ConfigError(f"starts must be >= 1 and size >= 4 (got {config['starts']}, {config['size']})")

    # -- run -------------------------------------------------------------------------
    def run(self, config: Mapping[str, Any], seed: int, device: str) -> Outcome:
        gen = self.generator(config, seed)
        make, lr, steps, scale, decay = _PROBLEMS[config["problem"]]
        if config["control"]:
            _, make, _, override, _ = _CONTROLS[config["control"]]
            lr, steps = override or (lr, steps)
        problem = make(config["size"], gen)
        inits = [problem.init(gen, scale) for _ in range(config["starts"])]
        flatten, unflatten = _packing(inits[0])
        starts = torch.stack([flatten(x) for x in inits])
        one = lambda x: problem.loss(unflatten(x))  # noqa: E731
        # problems with a natively batched loss skip vmap's per-op overhead
        loss = _batched_loss(problem) or vmap(one)
        smoothness = _local_smoothness(problem, one, flatten)
        if smoothness is not None:
            lr = min(lr, 1.0 / smoothness)
        optimizers: list = []

        def make_optimizer(params):
            # a problem on spheres lives on the oblique manifold of the stacked starts (rows)
            optimizers.append(GD(params, lr=lr) if problem.manifold is None
                              else RiemannianGD(params, lr=lr, manifold="oblique"))
            return optimizers[-1]

        used = [steps]

        def anneal(t: int, values: torch.Tensor) -> bool:
            optimizers[0].param_groups[0]["lr"] = lr * decay ** t
            # run to convergence: the step budget is a cap, and the run ends once every start meets
            # the success criterion the verdict counts (checked every _CHECK steps)
            if t % _CHECK or t == 0:
                return False
            x = optimizers[0].param_groups[0]["params"][0].detach()
            done = all(problem.success(unflatten(row)) for row in x)
            if done:
                used[0] = t
            return done

        end = descend(loss, starts, make_optimizer, steps, on_step=anneal)
        errors = [problem.recovery_error(unflatten(x)) for x in end]
        success = [problem.success(unflatten(x)) for x in end]
        metrics = {
            "success_fraction": float(np.mean(success)),
            "starts": len(success),
            "median_recovery_error": float(np.median(errors)),
            "max_recovery_error": float(np.max(errors)),
            "tolerance": problem.tolerance,
            "lr": lr,
            "steps": used[0],
            **_classify_failures(problem, one, end, success, config["problem"]),
        }
        if isinstance(problem, P.MaxCutBurerMonteiro):
            best = end[int(torch.tensor(errors).argmin())]
            _, cut = problem.round(best, gen)
            eigenvalues = torch.linalg.eigvalsh(problem.sdp_solution)
            metrics.update(sdp_value=-problem.global_min_value, rounded_cut=cut,
                           cut_over_sdp=cut / -problem.global_min_value,
                           sdp_rank=int((eigenvalues > 1e-6 * eigenvalues[-1]).sum()))
        return Outcome(metrics, {"recovery_error": errors},
                       diverged=not all(math.isfinite(e) for e in errors))

    # -- judge -----------------------------------------------------------------------
    def judge(self, results: Results) -> Verdict:
        groups: dict[tuple[str, str, int], list] = {}
        for r in results:
            groups.setdefault((r.config["problem"], r.config["control"], r.config["size"]), []).append(r)
        rates, checks, parts = {}, {}, []
        for (problem, control, size), rs in sorted(groups.items()):
            total = sum(r.metrics["starts"] for r in rs)
            rate = sum(r.metrics["success_fraction"] * r.metrics["starts"] for r in rs) / total
            label = f"{control or problem} (size {size})"
            rates[label] = rate
            why = _diagnosis(rs)
            if control:
                least = _CONTROLS[control][2] if control in _CONTROLS else 0.9
                checks[f"{label}: fails"] = 1 - rate >= least if least >= 0.5 else 1 - rate > least
                ranks = [r.metrics["sdp_rank"] for r in rs if "sdp_rank" in r.metrics]
                extra = f", SDP rank {min(ranks)}–{max(ranks)}" if ranks else ""
                parts.append(f"{label}: failure {1 - rate:.0%} of {total}{why}{extra}")
            else:
                checks[f"{label}: global optimum"] = rate >= _SUCCESS
                extra = ""
                cuts = [r.metrics["cut_over_sdp"] for r in rs if "cut_over_sdp" in r.metrics]
                if cuts:
                    extra = f", GW cut/SDP {np.mean(cuts):.3f}"
                parts.append(f"{label}: {rate:.1%} of {total}{why if rate < 1 else ''}{extra}")
        failed = [k for k, ok in checks.items() if not ok]
        measured = "; ".join(parts)
        if failed:
            measured += "; failed: " + ", ".join(failed)
        return Verdict(not failed, measured, self.criterion, len(results),
                       details={"checks": checks, "rates": rates})

    # -- figure ----------------------------------------------------------------------
    def figure(self, results: Results):
        import matplotlib.pyplot as plt

        verdict = self.judge(results)
        labels = list(verdict.details["rates"])
        values = [verdict.details["rates"][k] for k in labels]
        # control labels start with the control's name
        controls = [any(k.startswith(c) for c in _CONTROLS) for k in labels]
        fig, ax = plt.subplots(figsize=(10, 0.28 * len(labels) + 1.5))
        ax.barh(range(len(labels)), values, color=["C3" if c else "C0" for c in controls])
        ax.axvline(_SUCCESS, color="k", ls="--", lw=1, label=f"{_SUCCESS:.0%}")
        ax.set(yticks=range(len(labels)), yticklabels=labels, xlim=(0, 1.02),
               xlabel="fraction of (instance, start) pairs reaching the global optimum",
               title="benign landscapes (blue) and negative controls (red)")
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig


CLAIM = BenignLandscapes()
