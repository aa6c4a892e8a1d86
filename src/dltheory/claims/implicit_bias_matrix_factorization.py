"""Gradient descent on a full-width factorization UUᵀ from small initialization → min nuclear norm.

Gunasekar, Woodworth, Bhojanapalli, Neyshabur, Srebro, "Implicit Regularization in Matrix
Factorization", NeurIPS 2017: GD on f(U) = 1/(2m) Σ_i (⟨A_i, UUᵀ⟩ − y_i)² with U of full width
n × n, started at U_0 = α·U_init, converges as α → 0 to the minimum nuclear norm solution

    min tr M   s.t.   M ⪰ 0,  ⟨A_i, M⟩ = y_i                                          (P)

— proved there for commuting measurements (Theorem 1) and conjectured in general (Conjecture
1). Li, Ma, Zhang, "Algorithmic Regularization in Over-parameterized Matrix Sensing and
Neural Networks with Quadratic Activations", COLT 2018, prove it under RIP (Theorem 1.1, and
Theorem 1.3 for the quadratic-activation network f_W(x) = ‖Wx‖², which is the same loss with
rank-one A_i = x_i x_iᵀ and U = Wᵀ): with m ≳ n r measurements of a rank-r M*, GD from a small
enough α recovers M* — then also the solution of (P) — up to an error that vanishes with α.

Setup: a planted PSD rank-r M* (``dltheory.problems.MatrixSensing`` with Gaussian A_i, or
``QuadraticNetwork`` with Gaussian inputs), the solution of (P) by cvxpy with its dual
certificate checked (``dltheory.reference.min_nuclear_norm``), GD with the step 1/λ_max of the
dense float64 Hessian of f, the larger of its values at the factor of that solution and at
the run's initialization (the sharpness at both ends of each run; where the start is the
sharper end — large α — recomputed at the current iterate before each long stretch), the
same U_init direction for every α of a geometric grid, all seeds and α's as one batched
computation. We compare the *end-to-end* matrix UUᵀ, relative Frobenius error to the
solution of (P) — the factor itself is only defined up to U ↦ UQ.

Which configs the verdict rests on is decided by the reference, not by us: where the
solution of (P) is M* (relative distance < 1e-4), the measurements suffice and Li–Ma–Zhang's
theorem applies; elsewhere (fewer measurements, min nuclear norm ≠ M*) only Gunasekar et
al.'s conjecture speaks, which is known to fail in general (Li, Luo, Lyu, "Towards Resolving
the Implicit Bias of Gradient Descent for Matrix Factorization: Greedy Low-Rank Learning",
ICLR 2021; Razin, Cohen, NeurIPS 2020) — those configs are measured and reported, not judged.
Negative control: α = 1 (initialization as large as M*), whose interpolating limit lies far
from the minimum nuclear norm solution.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from dltheory.claims._implicit_bias import log_checkpoints
from dltheory.claims.base import Claim, Outcome, Results, Verdict
from dltheory.engine import Sweep
from dltheory.errors import ConfigError
from dltheory.problems import MatrixSensing, QuadraticNetwork
from dltheory.reference import min_nuclear_norm

PROBLEMS = ("sensing", "quadratic-net")
_ALPHAS = [1.0, 10 ** -0.5, 0.1, 10 ** -1.5, 0.01, 10 ** -2.5, 0.001]
_PROFILES = {
    "smoke": [dict(problem="sensing", n=8, rank=1, measurements=20, steps=8_000,
                   alphas=[1.0, 0.1, 0.01, 0.001], lr_scale=1.0, checkpoints=12)],
    "quick": [
        dict(problem="sensing", n=16, rank=2, measurements=60, steps=10_000, alphas=_ALPHAS,
             lr_scale=1.0, checkpoints=20),
        dict(problem="quadratic-net", n=16, rank=1, measurements=48, steps=20_000,
             alphas=_ALPHAS, lr_scale=1.0, checkpoints=20),
        dict(problem="sensing", n=16, rank=4, measurements=40, steps=10_000, alphas=_ALPHAS,
             lr_scale=1.0, checkpoints=20),
    ],
    "full": [
        dict(problem="sensing", n=50, rank=3, measurements=450, steps=200_000,
             alphas=_ALPHAS + [10 ** -3.5, 1e-4], lr_scale=1.0, checkpoints=40),
        dict(problem="quadratic-net", n=50, rank=3, measurements=600, steps=400_000,
             alphas=_ALPHAS + [10 ** -3.5, 1e-4], lr_scale=1.0, checkpoints=40),
        dict(problem="sensing", n=50, rank=10, measurements=625, steps=200_000,
             alphas=_ALPHAS + [10 ** -3.5, 1e-4], lr_scale=1.0, checkpoints=40),
    ],
}
_SEEDS = {"smoke": 2, "quick": 3, "full": 16}

# Criterion constants, fixed from the theorems before running (not tuned on results).
_RECOVERED = 1e-4     # the reference says min nuclear norm = M* (Li–Ma–Zhang's regime)
_LIMIT = 0.05         # relative error to the solution of (P) at the smallest α
_FIT = 1e-3           # GD must fit the measurements (relative residual) at the smallest α
_CONTROL = 0.25       # α = 1 must end at least this far from the solution of (P), ≥ 5× _LIMIT
_MONOTONE_SLACK = 1e-3  # error may stop decreasing only once both are below this
_REFRESH = 50  # large-α runs recompute their step before every stretch of >= this many steps
# On a CPU the dense sensing gradient reads every seed's m measurement matrices twice a step;
# seeds run in groups whose matrices fit in this many bytes. Measured here (AMD EPYC, 2 MiB
# L2 per core, 32 MiB L3; ms per seed-step, 9 factors, by group size 1/2/4/8/16): n = 32,
# m = 128 (1 MiB a seed) 0.33/0.31/0.28/0.30/0.38; n = 40, m = 300 (3.7 MiB) 0.78/0.79/
# 1.04/1.52/1.37; the full profile's n = 50, m = 450 (9 MiB) 1.98/2.82/3.43/3.27/3.34 and
# m = 625 3.03/4.52/4.70/4.48/4.39: a group beyond ~8 MiB costs up to 1.7× per seed. Below
# it (the smoke and quick shapes) the whole batch is one group. Seeds are batch-invariant,
# so the grouping changes no number.
_GROUP_BYTES = 8 * 2 ** 20


def _problem(config, generator):
    n, r, m = config["n"], config["rank"], config["measurements"]
    if config["problem"] == "sensing":
        p = MatrixSensing(n, r, m, width=n, generator=generator)
        return p, 0.5 * (p.A + p.A.mT)
    p = QuadraticNetwork(n, r, n, m, generator=generator)
    return p, p.X[:, :, None] * p.X[:, None, :]  # A_i = x_i x_iᵀ


def sensing_gradient(S: torch.Tensor, y: torch.Tensor, U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Residuals and gradient of ``f(U) = 1/(2m) Σ_i (⟨S_i, UUᵀ⟩ − y_i)²``, batched.

    ``∇f(U) = (2/m) (Σ_i r_i S_i) U`` for symmetric S_i. Shapes: S (B, m, n, n), y (B, m),
    U (B, K, n, n) — K factors (one per α) share one problem; returns r (B, K, m) and
    ∇f (B, K, n, n).
    """
    # Plain batched GEMMs (einsum), not seed_matmul, which cost 38% more here at 16 seeds:
    # bit-identity with a seed's lone run rests on its test's shapes.
    r = torch.einsum("bmij,bkij->bkm", S, U @ U.mT) - y[:, None, :]
    return r, (2.0 / S.shape[1]) * torch.einsum("bkm,bmij->bkij", r, S) @ U


def quadratic_net_gradient(X: torch.Tensor, y: torch.Tensor,
                           U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r""":func:`sensing_gradient` for rank-one measurements A_i = x_i x_iᵀ (the quadratic net),
    without forming them: ``⟨x_i x_iᵀ, UUᵀ⟩ = ‖Uᵀx_i‖²`` and ``Σ_i r_i x_i x_iᵀ U = Xᵀ diag(r) X U``,
    the K factors side by side in two GEMMs, X [U_1 … U_K] and Xᵀ [r ⊙ XU_1 … r ⊙ XU_K]. The
    dense form reads m matrices of n × n twice a step; this reads X (m × n): 1.3–1.7× faster
    at the quick (n = 16) and full (n = 50, m = 600) shapes. Plain batched GEMMs, as in
    :func:`sensing_gradient`: bit-identity with a seed's lone run rests on the tests' shapes
    and ``bench/seeds.py --invariance`` (quick and full shapes).
    Shapes: X (B, m, n), y (B, m), U (B, K, n, n); returns r (B, K, m) and ∇f (B, K, n, n).
    """
    B, K, n, k = U.shape
    XU = (X @ U.permute(0, 2, 1, 3).reshape(B, n, K * k)).reshape(B, -1, K, k)  # rows x_iᵀU_j
    r = (XU * XU).sum(-1) - y[:, :, None]  # (B, m, K)
    G = X.mT @ (r[..., None] * XU).reshape(B, -1, K * k)  # (B, n, K k)
    return r.mT, (2.0 / X.shape[1]) * G.reshape(B, n, K, k).permute(0, 2, 1, 3)


def _psd_factor(M: np.ndarray) -> torch.Tensor:
    w, V = np.linalg.eigh(M)
    return torch.tensor(V * np.sqrt(np.maximum(w, 0.0)))


def _sharpness(S: torch.Tensor, y: torch.Tensor, U: torch.Tensor) -> float:
    """λ_max of the dense Hessian of f(U) = (1/2m) Σ (⟨S_i, UUᵀ⟩ − y_i)² at U (float64).

    In closed form, with A_i = S_i + S_iᵀ and r_i the residuals, on row-major vec(U):
    ``H = (1/m) (Σ vec(A_iU) vec(A_iU)ᵀ + (Σ r_i A_i) ⊗ I_k)`` — the Gauss–Newton term
    plus the residual curvature (tested against ``torch.func.hessian``; 30× cheaper).
    """
    m, k = S.shape[0], U.shape[1]
    A = S + S.mT
    r = torch.einsum("mij,ij->m", S, U @ U.mT) - y
    G = (A @ U).reshape(m, -1)  # rows vec(A_i U)
    H = (G.mT @ G + torch.kron(torch.einsum("m,mij->ij", r, A),
                                torch.eye(k, dtype=U.dtype, device=U.device))) / m
    return float(torch.linalg.eigvalsh(H).max())


def _relative(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """‖A − B‖_F / ‖B‖_F over the last two axes."""
    return torch.linalg.matrix_norm(A - B) / torch.linalg.matrix_norm(B)


class ImplicitBiasMatrixFactorization(Claim):
    id = "implicit-bias-matrix-factorization"
    title = "GD on UUᵀ from small initialization → minimum nuclear norm (matrix sensing, quadratic nets)"
    source = ("S. Gunasekar, B. Woodworth, S. Bhojanapalli, B. Neyshabur, N. Srebro, \"Implicit "
              "Regularization in Matrix Factorization\", NeurIPS 2017; Y. Li, T. Ma, H. Zhang, "
              "\"Algorithmic Regularization in Over-parameterized Matrix Sensing and Neural "
              "Networks with Quadratic Activations\", COLT 2018, Theorems 1.1 and 1.3.")
    statement = ("GD on the full-width factorization UUᵀ from U_0 = α·U_init converges, as α → 0, "
                 "to the minimum nuclear norm solution, which recovers the low-rank M* when the "
                 "measurements suffice (RIP); the same for the quadratic-activation network.")
    criterion = (
        "In every config where the cvxpy minimum nuclear norm solution M̂ is M* (relative distance "
        f"< {_RECOVERED:g}), for every seed: the relative error ‖UUᵀ − M̂‖_F/‖M̂‖_F at the end of GD "
        f"does not increase as α decreases along the geometric grid (unless already < "
        f"{_MONOTONE_SLACK:g}), is < {_LIMIT:g} at the smallest α, where GD fits the measurements "
        f"(relative residual < {_FIT:g}) and recovers M* to < {_LIMIT:g}; the control α = 1 ends "
        f"≥ {_CONTROL:g} from M̂. Configs "
        "with M̂ ≠ M* (Gunasekar et al.'s conjecture) are measured and reported, not judged."
    )
    batched = True

    def sweep(self, profile: str) -> Sweep:
        return Sweep([dict(c) for c in _PROFILES[profile]], list(range(_SEEDS[profile])), profile,
                     self.id)

    def validate(self, config: Mapping[str, Any]) -> None:
        if config["problem"] not in PROBLEMS:
            raise ConfigError(f"unknown problem {config['problem']!r}; choose one of: "
                              f"{', '.join(PROBLEMS)}")
        n, r, m = config["n"], config["rank"], config["measurements"]
        if not (n >= 2 and 1 <= r <= n and m >= 1):
            raise ConfigError(f"need n >= 2, 1 <= rank <= n, measurements >= 1 "
                              f"(got n={n}, rank={r}, measurements={m})")
        if config["steps"] < 100:
            raise ConfigError(f"steps must be >= 100 (got {config['steps']})")
        alphas = list(config["alphas"])
        if (len(alphas) < 3 or alphas[0] != 1.0 or any(not a > 0 for a in alphas)
                or any(b >= a for a, b in zip(alphas, alphas[1:]))):
            raise ConfigError(f"alphas must be >= 3 decreasing positive values starting at the "
                              f"control 1.0 (got {alphas})")
        if not 0 < config["lr_scale"] <= 1.5:
            raise ConfigError(f"lr_scale must be in (0, 1.5]: the step is lr_scale/λ_max(∇²f) "
                              f"and GD is unstable beyond 2/λ_max (got {config['lr_scale']})")

    # -- run -------------------------------------------------------------------------
    def run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        # n × n matrices: intra-op threads cost more than they save.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            size = len(seeds)
            if config["problem"] == "sensing" and torch.device(device).type == "cpu":
                size = max(1, _GROUP_BYTES // (8 * config["measurements"] * config["n"] ** 2))
            return [out for i in range(0, len(seeds), size)
                    for out in self._run_batch(config, seeds[i:i + size], device)]
        finally:
            torch.set_num_threads(threads)

    def _setup(self, config, seed):
        """One seed's problem, its reference solution (P), step and initial direction."""
        g = self.generator(config, seed)
        problem, S = _problem(config, g)
        ref = min_nuclear_norm(S, problem.y, psd=True)
        U_init = problem.init(g, scale=1.0)
        if config["problem"] == "quadratic-net":
            U_init = U_init.mT  # the network's W is (width, d); the factor is U = Wᵀ
        # Each α's step: 1/sharpness at both ends of its run (its start, the target).
        target = _sharpness(S, problem.y, _psd_factor(ref.M))
        start = [_sharpness(S, problem.y, a * U_init) for a in config["alphas"]]
        eta = [config["lr_scale"] / max(target, s) for s in start]
        return problem, S, ref, eta, U_init, target, [s > target for s in start]

    def _run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        setups = [self._setup(config, s) for s in seeds]
        alphas = torch.tensor(config["alphas"], dtype=torch.float64, device=device)
        y = torch.stack([s[0].y for s in setups]).to(device)
        M_ref = torch.stack([torch.tensor(s[2].M) for s in setups]).to(device)[:, None]
        M_star = torch.stack([s[0].M_star for s in setups]).to(device)[:, None]
        eta = torch.tensor([s[3] for s in setups], dtype=torch.float64, device=device)
        eta = eta[:, :, None, None]
        U = alphas[None, :, None, None] * torch.stack([s[4] for s in setups]).to(device)[:, None]
        if config["problem"] == "quadratic-net":
            X = torch.stack([s[0].X for s in setups]).to(device)
            gradient = partial(quadratic_net_gradient, X, y)
        else:
            gradient = partial(sensing_gradient, torch.stack([s[1] for s in setups]).to(device), y)
        marks = log_checkpoints(config["steps"], config["checkpoints"])
        errors, t = [], 0
        for mark in marks:
            if mark - t >= _REFRESH:
                self._refresh_steps(config, setups, U, eta)
            for _ in range(mark - t):
                _, grad = gradient(U)
                U = U - eta * grad
            t = mark
            errors.append(_relative(U @ U.mT, M_ref))  # (B, K)
        r, _ = gradient(U)
        M = U @ U.mT
        final = {"error": errors[-1].cpu().numpy(),
                 "recovery": _relative(M, M_star).cpu().numpy(),
                 "residual": (torch.linalg.vector_norm(r, dim=-1)
                              / torch.linalg.vector_norm(y, dim=-1)[:, None]).cpu().numpy(),
                 "nuclear": torch.diagonal(M, dim1=-2, dim2=-1).sum(-1).cpu().numpy()}
        trajectory = torch.stack(errors, -1).cpu().numpy()  # (B, K, T)
        return [self._summarize(config, setups[i], {k: v[i] for k, v in final.items()},
                                trajectory[i], marks)
                for i in range(len(seeds))]

    @staticmethod
    def _refresh_steps(config, setups, U, eta) -> None:
        """Runs whose step is set by their start (large α, sharper than the target) get
        1/max(target, sharpness now): the curvature falls as UUᵀ nears the measurements."""
        for i, setup in enumerate(setups):
            target, limited = setup[5], setup[6]
            for k in (k for k, lim in enumerate(limited) if lim):
                sharp = _sharpness(setup[1], setup[0].y, U[i, k].cpu())  # the host's S, y
                eta[i, k] = config["lr_scale"] / max(target, sharp)

    def _summarize(self, config, setup, final, trajectory, marks) -> Outcome:
        problem, _, ref, eta, *_ = setup
        M_star = problem.M_star.numpy()
        ref_to_truth = float(np.linalg.norm(ref.M - M_star) / np.linalg.norm(M_star))
        err = [float(e) for e in final["error"]]
        metrics = {
            "reference_gap": float(ref.gap), "reference_to_truth": ref_to_truth,
            "measurements_suffice": ref_to_truth < _RECOVERED, "step": eta[-1],
            "control_error": err[0], "smallest_alpha_error": err[-1],
            "smallest_alpha_recovery": float(final["recovery"][-1]),
            "smallest_alpha_residual": float(final["residual"][-1]),
            "control_residual": float(final["residual"][0]),
            "nuclear_ratio_smallest_alpha": float(final["nuclear"][-1]) / ref.nuclear_norm,
            "monotone_in_alpha": all(b <= a or max(a, b) < _MONOTONE_SLACK
                                     for a, b in zip(err, err[1:])),
        }
        curves = {"alpha": list(config["alphas"]), "error": err,
                  "recovery_error": [float(e) for e in final["recovery"]],
                  "residual": [float(e) for e in final["residual"]], "t": list(marks)}
        for k, row in enumerate(trajectory):
            curves[f"error_t_{k}"] = [float(e) for e in row]
        return Outcome(metrics, curves, diverged=not np.isfinite(err).all())

    # -- judge -----------------------------------------------------------------------
    @staticmethod
    def _checks(m: Sequence[Mapping[str, Any]]) -> dict[str, bool]:
        return {
            "error non-increasing as α → 0": all(x["monotone_in_alpha"] for x in m),
            "smallest α reaches min nuclear norm": all(x["smallest_alpha_error"] < _LIMIT for x in m),
            "GD fits the measurements": all(x["smallest_alpha_residual"] < _FIT for x in m),
            "recovers M*": all(x["smallest_alpha_recovery"] < _LIMIT for x in m),
            "control α = 1 ends far": all(x["control_error"] >= _CONTROL for x in m),
        }

    def judge(self, results: Results) -> Verdict:
        if not results:
            return Verdict.nothing_to_judge(self.criterion)
        judged, reported = Results(), Results()
        for r in results:
            (judged if r.metrics["measurements_suffice"] else reported).append(r)
        if not judged:
            return Verdict(False, "no config where min nuclear norm = M* (the theorem's regime) "
                           "was run", self.criterion, len(results))
        checks = self._checks([r.metrics for r in judged])
        failed = []
        for rs in judged.by_config().values():
            c = rs[0].config
            failed += [f"{k} ({c['problem']} r={c['rank']} m={c['measurements']})"
                       for k, ok in self._checks([r.metrics for r in rs]).items() if not ok]

        def describe(group: Results) -> list[str]:
            parts = []
            for rs in group.by_config().values():
                c, m = rs[0].config, [r.metrics for r in rs]
                med = {k: float(np.median([x[k] for x in m])) for k in (
                    "control_error", "smallest_alpha_error", "smallest_alpha_recovery",
                    "smallest_alpha_residual", "nuclear_ratio_smallest_alpha", "control_residual")}
                parts.append(
                    f"{c['problem']} n={c['n']} r={c['rank']} m={c['measurements']}: ‖UUᵀ−M̂‖/‖M̂‖ "
                    f"α=1 {med['control_error']:.2g} (residual {med['control_residual']:.0e}) → "
                    f"α={c['alphas'][-1]:.0e} "
                    f"{med['smallest_alpha_error']:.2g} (monotone {sum(x['monotone_in_alpha'] for x in m)}"
                    f"/{len(m)}, residual {med['smallest_alpha_residual']:.0e}, recovery "
                    f"{med['smallest_alpha_recovery']:.2g}, "
                    f"tr/‖M̂‖_* {med['nuclear_ratio_smallest_alpha']:.3f})")
            return parts

        measured = "median over seeds; judged (M̂ = M*): " + "; ".join(describe(judged))
        if reported:
            measured += "; reported (M̂ ≠ M*, conjecture only): " + "; ".join(describe(reported))
        if failed:
            measured += "; failed: " + ", ".join(failed)
        return Verdict(not failed, measured, self.criterion, len(results),
                       details={"checks": checks, "judged_runs": len(judged),
                                "reported_runs": len(reported)})

    # -- figure ----------------------------------------------------------------------
    def figure(self, results: Results):
        import matplotlib.pyplot as plt

        groups = list(results.by_config().values())
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for j, rs in enumerate(groups):
            c = rs[0].config
            tag = "" if rs[0].metrics["measurements_suffice"] else " (M̂≠M*)"
            for s, r in enumerate(rs):
                axes[0].plot(r.curves["alpha"], np.maximum(r.curves["error"], 1e-16), "o-",
                             color=f"C{j}", alpha=0.6,
                             label=f"{c['problem']} r={c['rank']} m={c['measurements']}{tag}"
                             if s == 0 else None)
        axes[0].axhline(_LIMIT, color="k", ls=":", lw=1)
        axes[0].set(xscale="log", yscale="log", xlabel="initialization scale α",
                    ylabel="‖UUᵀ − M̂‖_F / ‖M̂‖_F", title="distance to min nuclear norm (cvxpy)")
        axes[0].invert_xaxis()
        axes[0].legend(fontsize=8)
        r = groups[0][0]
        for k, a in enumerate(r.curves["alpha"]):
            axes[1].plot(r.curves["t"], np.maximum(r.curves[f"error_t_{k}"], 1e-16),
                         color=plt.cm.viridis(k / max(len(r.curves["alpha"]) - 1, 1)),
                         label=f"α={a:.0e}")
        axes[1].set(xscale="log", yscale="log", xlabel="GD step t", ylabel="‖UUᵀ − M̂‖_F / ‖M̂‖_F",
                    title=f"{r.config['problem']} (seed {r.seed}): plateau ~ log(1/α)")
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        return fig


CLAIM = ImplicitBiasMatrixFactorization()
