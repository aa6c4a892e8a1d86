"""First-order methods from a random start converge to minimizers, not to strict saddles.

Lee, Panageas, Piliouras, Simchowitz, Jordan, Recht, "First-order methods almost always
avoid strict saddle points", Math. Programming 176, 2019, Theorem 2 (and Corollaries 1–3
for gradient descent, coordinate descent, mirror descent and manifold gradient descent),
after Lee, Simchowitz, Jordan, Recht, COLT 2016, Theorem 4; Hong, Lee, Razaviyayn, ICML
2018, for (gradient primal–dual) ADMM. If the update map g is a local diffeomorphism (a step
η < 1/ℓ) then the set of starts that converge to a strict saddle — the union of the
saddles' stable manifolds — has measure zero.

Setup. Five methods, each from many starts drawn uniformly from a ball (an absolutely
continuous law, as the theorem needs), all starts of a run as one stacked computation:
GD, cyclic coordinate descent, mirror descent with the hyperbolic-entropy potential and
consensus ADMM on a randomly rotated strict-saddle function f(w) = h(Qw),
h(z) = Σ_{i<s}(z_i⁴/4 − γz_i²/2) + Σ_{i≥s} z_i²/2 (3^s critical points, 2^s of them minima,
the others strict saddles with λ_min = −γ); Riemannian GD on orthogonal tensor
decomposition on the oblique manifold (Ge et al. 2015). Steps follow the theorem: η = lr_scale/ℓ
with ℓ the gradient's Lipschitz constant on the region the iterates stay in.

Independent answer: the minimizers and the Hessian are known in closed form (Qᵀ∇²h(Qw)Q)
and checked against the dense autodiff Hessian at every limit point. Negative control: the
same method started exactly on the stable manifold of the saddle at 0 (the axis-aligned
function, z_i = 0 for i < s, a measure-zero set that every method maps to itself bit for
bit) converges to the saddle; for tensor decomposition, starts with u₁ = u₂ (an invariant
set of measure zero) end at a strict saddle.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
from torch.func import vmap

from dltheory.claims._many_starts import descend, gradient_and_curvature
from dltheory.claims.base import Claim, Outcome, Results, Verdict
from dltheory.engine import Sweep
from dltheory.errors import ConfigError
from dltheory.optim import ADMM, GD, CoordinateDescent, MirrorDescent, RiemannianGD
from dltheory.problems import OrthogonalTensorDecomposition, StrictSaddle

METHODS = ("gd", "coordinate", "mirror", "admm", "riemannian")
_BASE = dict(dim=3, negative_dims=2, gamma=1.0, radius=1.5, tensor_d=4, lr_scale=0.5)
# iterations per method (coordinate descent: sweeps over the d coordinates)
# (about 3x the iterations the slowest start needs at these step sizes)
_STEPS = dict(gd=500, coordinate=350, mirror=700, admm=1500, riemannian=800)
_PROFILES = {  # (starts per run, control starts per run, runs)
    "smoke": (12, 3, 1),
    "quick": (100, 10, 2),
    "full": (500, 50, 8),
}

# Criterion constants, fixed from the theorem before running.
_GRAD_TOL = 1e-8  # a limit point: (Riemannian) gradient norm at most this
_CURV_TOL = 1e-6  # "λ_min ≥ −tol" at a minimizer (rounding level: every minimum here is non-degenerate)
_SADDLE_CURV = 0.5  # the control's limit is a strict saddle: λ_min ≤ −γ/2 (the closed form is −γ)
_HESS_AGREE = 1e-8  # autodiff Hessian vs the closed form, relative


def _ball(count: int, dim: int, radius: float, gen: torch.Generator) -> torch.Tensor:
    """Uniform in the ball of the given radius: a Gaussian direction times radius·U^{1/dim}."""
    x = torch.randn(count, dim, generator=gen, dtype=torch.float64)
    u = torch.rand(count, 1, generator=gen, dtype=torch.float64)
    return radius * u ** (1 / dim) * x / x.norm(dim=1, keepdim=True)


def _rotation(dim: int, gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def _smoothness(config: Mapping[str, Any]) -> float:
    """ℓ: Lipschitz constant of ∇f on the region of the iterates.

    Strict saddle: for |z_i| ≤ R, h'' ∈ [−γ, 3R² − γ] on the quartic coordinates and 1 on
    the rest. Tensor decomposition on unit rows: the diagonal Hessian blocks are bounded by
    2(d−1), the off-diagonal ones by 4, the Riemannian correction ⟨u_i, ∇_i f⟩ by 2(d−1), so
    ℓ ≤ 8(d−1).
    """
    if config["method"] == "riemannian":
        return 8.0 * (config["tensor_d"] - 1)
    return max(3 * config["radius"] ** 2 - config["gamma"], 1.0, config["gamma"])


def _optimizer(config: Mapping[str, Any], quartic, quadratic):
    """(make_optimizer, per_start, optimizer steps) for the config's method, steps from ℓ."""
    ell, scale, method = _smoothness(config), config["lr_scale"], config["method"]
    steps = config["steps"]
    if method == "gd":
        return lambda p: GD(p, lr=scale / ell), False, steps
    if method == "coordinate":
        # a coordinate's partial derivative is ℓ-Lipschitz along it; one sweep = d steps
        return (lambda p: CoordinateDescent(p, lr=scale / ell, order="cyclic"), True,
                steps * config["dim"])
    if method == "mirror":
        # hypentropy has ψ''(w) = 1/√(w² + β²): α-strongly convex on |w| ≤ R with
        # α = 1/√(R² + β²), β = 1; Lee et al. 2019 (mirror descent) need η < α/ℓ
        alpha = 1 / math.sqrt(config["radius"] ** 2 + 1)
        return lambda p: MirrorDescent(p, lr=scale * alpha / ell, potential="hypentropy"), False, steps
    if method == "admm":
        # f = f₁ + f₂ (quartic and quadratic parts) in consensus form; ρ = 2ℓ (Hong et al.
        # need ρ large against ℓ) and inner gradient steps η < 1/(ℓ + ρ)
        rho = 2 * ell
        losses = [quartic, quadratic]
        return lambda p: ADMM(p, losses, lr=scale / (ell + rho), rho=rho), False, steps
    return lambda p: RiemannianGD(p, lr=scale / ell, manifold="oblique"), False, steps


class GDAvoidsStrictSaddles(Claim):
    id = "gd-avoids-strict-saddles"
    title = "First-order methods from random starts avoid strict saddles"
    source = ("J. D. Lee, I. Panageas, G. Piliouras, M. Simchowitz, M. I. Jordan, B. Recht, \"First-order "
              "methods almost always avoid strict saddle points\", Math. Programming 176:311–337, "
              "2019, Theorem 2 and Corollaries 1–3; J. D. Lee, M. Simchowitz, M. I. Jordan, B. Recht, "
              "\"Gradient descent only converges to minimizers\", COLT 2016, Theorem 4; M. Hong, "
              "J. D. Lee, M. Razaviyayn, ICML 2018 (ADMM).")
    statement = ("From a random initialization, gradient descent, coordinate descent, mirror descent, "
                 "Riemannian gradient descent and ADMM with a step below 1/ℓ converge to local "
                 "minimizers: the starts that converge to a strict saddle have measure zero.")
    criterion = (
        "Every method, every random start (≥ 200 per method in quick): the limit has "
        f"(Riemannian) gradient norm ≤ {_GRAD_TOL:g}, Hessian λ_min ≥ −{_CURV_TOL:g} (dense "
        "autodiff Hessian; on the strict saddle it agrees with the closed form within "
        f"{_HESS_AGREE:g} relative) and is a global minimizer (recovery error within the "
        "problem's tolerance): 100%. Control: every start on the stable manifold (or the "
        f"invariant set u₁ = u₂) converges (gradient ≤ {_GRAD_TOL:g}) to a point with "
        f"λ_min ≤ −{_SADDLE_CURV:g}γ (strict saddle; tensor: λ_min < −{_CURV_TOL:g}) that is not a minimizer."
    )

    cpu_only = (
        "its saddle problems have 3 dimensions (a 4 × 4 × 4 tensor for tensor decomposition); "
        "kernels that small are launch-bound on a GPU")

    def sweep(self, profile: str) -> Sweep:
        starts, control, runs = _PROFILES[profile]
        configs = [dict(_BASE, method=m, steps=_STEPS[m], starts=starts, control_starts=control)
                   for m in METHODS]
        return Sweep(configs, list(range(runs)), profile, self.id)

    def validate(self, config: Mapping[str, Any]) -> None:
        if config["method"] not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)} (got {config['method']!r})")
        if not 1 <= config["negative_dims"] <= config["dim"]:
            raise ConfigError(f"need 1 <= negative_dims <= dim "
                              f"(got {config['negative_dims']}, {config['dim']})")
        if not 0 < config["lr_scale"] < 1:
            raise ConfigError(f"lr_scale must be in (0, 1): the theorem needs η < 1/ℓ "
                              f"(got {config['lr_scale']})")
        if not (config["gamma"] > 0 and config["radius"] > math.sqrt(config["gamma"])):
            raise ConfigError(f"need gamma > 0 and radius > sqrt(gamma) so the ball holds the minima "
                              f"(got gamma={config['gamma']}, radius={config['radius']})")
        if (config["tensor_d"] < 2 or config["starts"] < 1 or config["control_starts"] < 1
                or config["steps"] < 1):
            raise ConfigError("tensor_d must be >= 2 and starts, control_starts, steps >= 1")

    # -- run -------------------------------------------------------------------------
    def run(self, config: Mapping[str, Any], seed: int, device: str) -> Outcome:
        gen = self.generator(config, seed)
        K, C = config["starts"], config["control_starts"]
        if config["method"] == "riemannian":
            problem = OrthogonalTensorDecomposition(config["tensor_d"], generator=gen)
            starts = torch.stack([problem.init(gen) for _ in range(K + C)])
            starts[K:, 1] = starts[K:, 0]  # control: u₁ = u₂, an invariant set of measure zero
            rotations, f_star, manifold = None, 0.0, "oblique"
            point_loss, per_point, split = problem.loss, (), (None, None)
        else:
            problem = StrictSaddle(config["dim"], config["negative_dims"], gamma=config["gamma"])
            down = torch.arange(config["dim"]) < config["negative_dims"]
            ball = _ball(K + C, config["dim"], config["radius"], gen)
            # random starts: f(w) = h(Qw); control: the axis-aligned h (Q = I) from its saddle's
            # stable manifold. Each start carries its own rotation so both run as one batch.
            starts = torch.cat([ball[:K], torch.where(down, 0.0, ball[K:])])
            eye = torch.eye(config["dim"], dtype=torch.float64)
            rotations = torch.cat([_rotation(config["dim"], gen).expand(K, -1, -1), eye.expand(C, -1, -1)])
            f_star, manifold = problem.global_min_value, None
            point_loss, per_point = (lambda w, Q: problem.loss(Q @ w)), (rotations,)
            split = _split(problem, rotations)
        make, per_start, steps = _optimizer(config, *split)
        every, gaps = max(1, steps // 200), ([], [])

        def record(t: int, values: torch.Tensor) -> None:
            if t % every == 0:
                gaps[0].append(float((values[:K] - f_star).median()))
                gaps[1].append(float((values[K:] - f_star).median()))

        batched = vmap(point_loss)
        limits = descend(lambda W: batched(W, *per_point), starts, make, steps, per_start=per_start,
                         on_step=record)
        grads, lams = gradient_and_curvature(point_loss, limits, manifold, *per_point)
        return self._summarize(config, grads, lams, limits, K,
                               {"loss_gap": gaps[0], "control_loss_gap": gaps[1]}, problem, rotations)

    def _summarize(self, config, grads, lams, limits, K, curves, problem, rotations) -> Outcome:
        gamma = config["gamma"]
        (end, control_end), (grad, c_grad), (lam, c_lam) = (
            (x[:K], x[K:]) for x in (limits, grads, lams))
        if rotations is not None:
            # the closed form: ∇²f(w) = Qᵀ ∇²h(Qw) Q, a diagonal ∇²h
            exact = torch.stack([torch.linalg.eigvalsh(Q.mT @ problem.hessian(Q @ w) @ Q)[0]
                                 for Q, w in zip(rotations, limits)])
            hess_err = float(((lams - exact).abs() / exact.abs().clamp(min=1.0)).max())
            errors = [problem.recovery_error(Q @ w) for Q, w in zip(rotations, end)]
            c_errors = [problem.recovery_error(w) for w in control_end]
            saddle_dist = float(control_end.norm(dim=1).max())
            c_saddle = c_lam <= -_SADDLE_CURV * gamma
        else:
            hess_err = 0.0
            errors = [problem.recovery_error(U) for U in end]
            c_errors = [problem.recovery_error(U) for U in control_end]
            saddle_dist = None  # the tensor control's saddle is not known in advance
            c_saddle = c_lam < -_CURV_TOL
        errors, c_errors = torch.tensor(errors), torch.tensor(c_errors)
        minimizer = (grad <= _GRAD_TOL) & (lam >= -_CURV_TOL) & (errors <= problem.tolerance)
        at_saddle = (c_grad <= _GRAD_TOL) & c_saddle & (c_errors > problem.tolerance)
        metrics = {
            "starts": int(end.shape[0]),
            "minimizer_fraction": float(minimizer.double().mean()),
            "converged_fraction": float((grad <= _GRAD_TOL).double().mean()),
            "max_grad_norm": float(grad.max()),
            "min_lambda_min": float(lam.min()),
            "max_recovery_error": float(errors.max()),
            "hessian_closed_form_error": hess_err,
            "control_starts": int(control_end.shape[0]),
            "control_saddle_fraction": float(at_saddle.double().mean()),
            "control_max_grad_norm": float(c_grad.max()),
            "control_max_lambda_min": float(c_lam.max()),
            "control_min_recovery_error": float(c_errors.min()),
            "control_max_distance_to_saddle": saddle_dist,
        }
        curves = {**curves, "lambda_min": lam.tolist(), "control_lambda_min": c_lam.tolist()}
        return Outcome(metrics, curves, diverged=not torch.isfinite(end).all())

    # -- judge -----------------------------------------------------------------------
    def judge(self, results: Results) -> Verdict:
        by_method = {m: [r.metrics for r in results if r.config.get("method") == m] for m in METHODS}
        by_method = {m: ms for m, ms in by_method.items() if ms}
        checks, parts = {}, []
        for m, ms in by_method.items():
            starts = sum(x["starts"] for x in ms)
            found = sum(round(x["minimizer_fraction"] * x["starts"]) for x in ms)
            c_starts = sum(x["control_starts"] for x in ms)
            c_found = sum(round(x["control_saddle_fraction"] * x["control_starts"]) for x in ms)
            checks[f"{m}: every start → a minimizer"] = found == starts
            checks[f"{m}: λ_min ≥ −tol at every limit"] = all(x["min_lambda_min"] >= -_CURV_TOL for x in ms)
            checks[f"{m}: Hessian agrees with the closed form"] = all(
                x["hessian_closed_form_error"] <= _HESS_AGREE for x in ms)
            checks[f"{m}: control → a strict saddle"] = c_found == c_starts
            lam_min = min(x['min_lambda_min'] for x in ms)
            grad_max = max(x['max_grad_norm'] for x in ms)
            parts.append(f"{m}: {found}/{starts} minimizers (min λ_min {lam_min:.3g}, "
                         f"max ‖grad‖ {grad_max:.1e}); control {c_found}/{c_starts} "
                         f"at a saddle (max λ_min {max(x['control_max_lambda_min'] for x in ms):.3g})")
        failed = [k for k, ok in checks.items() if not ok]
        measured = "; ".join(parts)
        if failed:
            measured += "; failed: " + ", ".join(failed)
        return Verdict(not failed, measured, self.criterion, len(results),
                       details={"checks": checks})

    # -- figure ----------------------------------------------------------------------
    def figure(self, results: Results):
        import matplotlib.pyplot as plt

        methods = [m for m in METHODS if any(r.config.get("method") == m for r in results)]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        for i, m in enumerate(methods):
            rs = [r for r in results if r.config["method"] == m]
            lam = np.concatenate([r.curves["lambda_min"] for r in rs])
            c_lam = np.concatenate([r.curves["control_lambda_min"] for r in rs])
            jitter = np.linspace(-0.15, 0.15, len(lam))
            ax1.scatter(i + jitter, lam, s=6, color="C0", label="random start" if i == 0 else None)
            ax1.scatter(i + np.linspace(-0.15, 0.15, len(c_lam)) + 0.35, c_lam, s=6, color="C3",
                        label="start on the stable manifold (control)" if i == 0 else None)
            gap = np.array(rs[0].curves["loss_gap"])
            ax2.plot(np.linspace(0, 1, len(gap)), np.maximum(gap, 1e-17), color=f"C{i}", label=m)
        ax1.axhline(0, color="k", lw=0.8)
        ax1.set(xticks=range(len(methods)), xticklabels=methods, ylabel="λ_min(∇²f) at the limit",
                title="curvature at the limit points")
        ax1.legend(fontsize=8)
        ax2.set(yscale="log", xlabel="fraction of the run", ylabel="median f − f*",
                title="random starts: loss gap (run 0)")
        ax2.legend(fontsize=8)
        fig.tight_layout()
        return fig


def _split(saddle: StrictSaddle, rotations: torch.Tensor):
    """f = f₁ + f₂, f₁ the quartic and f₂ the quadratic part: ADMM's local losses, summed
    over the stacked starts (rows of W)."""
    down, gamma = torch.arange(saddle.dim) < saddle.negative_dims, saddle.gamma

    def quartic(W):
        z = (rotations @ W[..., None])[..., 0]
        return torch.where(down, z ** 4 / 4, 0.0).sum()

    def quadratic(W):
        z = (rotations @ W[..., None])[..., 0]
        return torch.where(down, -gamma * z ** 2 / 2, z ** 2 / 2).sum()

    return quartic, quadratic


CLAIM = GDAvoidsStrictSaddles()
