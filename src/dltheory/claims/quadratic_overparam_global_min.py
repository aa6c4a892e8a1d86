"""Quadratic-activation nets with m ≥ √(2N) units reach the global minimum; test error is flat in m.

Du & Lee (2018), Theorem 3.1/3.2: for f_W(x) = Σ_j (w_jᵀx)² = xᵀWᵀWx and the weight-decayed
square loss

    L(W) = 1/(2N) Σ_i (‖W x_i‖² − y_i)² + (λ/2) ‖W‖_F²,

every second-order stationary point is a global minimum once the width m ≥ √(2N), so local
search from a random start finds it; and the global minimum is the convex program

    min_{M ⪰ 0}  1/(2N) Σ_i (x_iᵀ M x_i − y_i)² + (λ/2) tr M      (M = WᵀW)

whenever m is at least the rank of its solution. Their generalization result (Theorem 5.1)
bounds the test error independently of m. Checked here: GD from a random start, at every
width, against the convex optimum solved by Clarabel (an independent answer), and the test error
of the trained nets across m.

Setup: ``problems.QuadraticNetwork`` (teacher of k units, x ~ N(0, I_d), N samples) per seed;
students W₀ with rows N(0, I/(dm)) (so W₀ᵀW₀ ≈ I/d at every width), full-batch GD with the
step lr / mean_i ‖x_i‖²y_i for a fixed budget (all widths, all seeds batched on one seed axis
per width). Negative control: a width below the
rank of the convex optimum (m = 1 < k), which cannot reach it.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from dltheory.claims.base import Claim, Outcome, Results, Verdict
from dltheory.engine import Sweep
from dltheory.errors import ConfigError
from dltheory.models import seed_matmul
from dltheory.problems import QuadraticNetwork
from dltheory.reference._solve import solve_conic

_PROFILES = {
    "smoke": dict(d=6, k=2, N=24, widths=[1, 3, 7, 12], lam=0.2, steps=3000, lr=0.4, test=500),
    "quick": dict(d=10, k=3, N=60, widths=[1, 3, 6, 11, 20, 40], lam=0.2, steps=8000, lr=0.4,
                  test=2000),
    "full": dict(d=20, k=4, N=200, widths=[1, 4, 10, 20, 40, 80, 160], lam=0.2, steps=50_000,
                 lr=0.4, test=10_000),
}
_SEEDS = {"smoke": 2, "quick": 4, "full": 16}

# Criterion constants, fixed before any run (not tuned on results).
GAP = 1e-4  # global min reached: (L(W) − L*) / L* <= 1e-4 (the solver's accuracy is ~1e-7)
CONTROL_GAP = 1e-2  # the rank-deficient control ends >= 1% above L*
TEST_SPREAD = 0.05  # test errors of widths >= √(2N) within ±5% of the convex solution's,
TEST_FLOOR = 1e-3  # or within 1e-3 absolute (0.1% of the label scale: noise-level differences)


class QuadraticOverparamGlobalMin(Claim):
    id = "quadratic-overparam-global-min"
    title = "Quadratic nets with m ≥ √(2N) reach the convex global minimum; test error flat in m"
    source = ("S. S. Du, J. D. Lee, \"On the Power of Over-parametrization in Neural Networks "
              "with Quadratic Activation\", ICML 2018, Theorems 3.1, 3.2 and 5.1.")
    statement = ("With weight decay and m ≥ √(2N) hidden units, local search on a "
                 "quadratic-activation network reaches the global minimum of the regularized "
                 "loss (the nuclear-norm-regularized convex program), and its test error does "
                 "not grow with m.")
    criterion = (
        f"For every width m >= √(2N) and every seed, GD's final objective is within a relative "
        f"{GAP:g} of the optimum of the convex reformulation (Clarabel), and its test error (relative "
        f"MSE on fresh inputs) is within ±{TEST_SPREAD:.0%} (or {TEST_FLOOR:g} absolute) of the convex "
        f"solution's. Control, "
        f"m = 1 below the teacher rank: its objective stays >= {CONTROL_GAP:g} above the optimum."
    )
    batched = True

    # -- setup -----------------------------------------------------------------------
    def sweep(self, profile: str) -> Sweep:
        base = dict(_PROFILES[profile])
        widths = base.pop("widths")
        return Sweep(Sweep.grid(base, {"m": widths}), list(range(_SEEDS[profile])), profile, self.id)

    def validate(self, config: Mapping[str, Any]) -> None:
        for key in ("d", "k", "N", "m", "steps", "test"):
            if config[key] < 1:
                raise ConfigError(f"{key} must be >= 1 (got {config[key]})")
        if not config["lam"] > 0:
            raise ConfigError(f"lam must be positive: the theorem needs weight decay (got {config['lam']})")
        if not 0 < config["lr"] <= 0.5:
            raise ConfigError(f"lr must be in (0, 0.5]: the step is lr / mean ‖x‖²y and the "
                              f"Hessian near the optimum is ≈ 4 mean ‖x‖²y (got {config['lr']})")

    # -- run -------------------------------------------------------------------------
    def _problem(self, config: Mapping[str, Any], seed: int, device: str):
        """The seed's teacher, training set and test inputs, shared by every width."""
        gen = self.generator({k: v for k, v in config.items() if k != "m"}, seed, device)
        problem = QuadraticNetwork(config["d"], config["k"], config["k"], config["N"],
                                   generator=gen, device=device)
        X_test = torch.randn(config["test"], config["d"], generator=gen, dtype=torch.float64,
                             device=device)
        return problem, X_test

    def run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._run_batch(config, seeds, device)
        finally:
            torch.set_num_threads(threads)

    def _run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        problems = [self._problem(config, s, device) for s in seeds]
        X = torch.stack([p.X for p, _ in problems])  # (S, N, d)
        y = torch.stack([p.y for p, _ in problems])
        gens = [self.generator(config, s, device) for s in seeds]
        d, m, lam = config["d"], config["m"], config["lam"]
        W = torch.stack([torch.randn(m, d, generator=g, dtype=X.dtype, device=device) for g in gens])
        W = W / math.sqrt(d * m)  # M₀ = W₀ᵀW₀ ≈ I/d at every width: one step size serves all m
        # Step lr / κ with κ = mean_i ‖x_i‖² y_i: near M* the Hessian in W is ≈ (4/N) Σ ‖x_i‖²
        # x_iᵀM*x_i ≈ 4κ, so lr < 1/2 is stable whatever the draw of the inputs.
        kappa = torch.stack([((p.X ** 2).sum(1) * p.y).mean() for p, _ in problems])[:, None, None]
        step = config["lr"] / kappa
        for _ in range(config["steps"]):
            # ∇L = (2/N) W Σ_i r_i x_i x_iᵀ + λW,  r_i = ‖W x_i‖² − y_i
            # (GEMMs by seed_matmul: bit for bit what each seed gets alone)
            r = (seed_matmul(X, W.mT) ** 2).sum(-1) - y
            W = W - step * (2 / config["N"] * seed_matmul(W, seed_matmul((X * r[..., None]).mT, X))
                                    + lam * W)
        outcomes = []
        for k, (problem, X_test) in enumerate(problems):
            M = W[k].mT @ W[k]
            M_star, L_star = _convex_optimum(problem.X, problem.y, lam)
            L = _objective(M, problem.X, problem.y, lam)
            truth = _predict(problem.U_star @ problem.U_star.mT, X_test)  # M* = W*ᵀW*
            scale = float((truth ** 2).mean())
            test = float(((_predict(M, X_test) - truth) ** 2).mean()) / scale
            star = _predict(torch.as_tensor(M_star, device=X_test.device), X_test)
            test_star = float(((star - truth) ** 2).mean()) / scale
            outcomes.append(Outcome(
                {"m": m, "sqrt_2N": math.sqrt(2 * config["N"]), "objective": L, "optimum": L_star,
                 "gap": (L - L_star) / L_star, "test_error": test, "test_error_convex": test_star,
                 "rank_convex": int(np.linalg.matrix_rank(M_star, tol=1e-6 * np.abs(M_star).max())),
                 "distance_to_convex": float(np.linalg.norm(M.cpu().numpy() - M_star)
                                             / np.linalg.norm(M_star))},
                diverged=not math.isfinite(L)))
        return outcomes

    # -- judge -----------------------------------------------------------------------
    def judge(self, results: Results) -> Verdict:
        N_root = results[0].metrics["sqrt_2N"]
        widths = sorted({r.config["m"] for r in results})
        wide = [r for r in results if r.config["m"] >= N_root]
        control = results.where(m=1)
        worst_gap = {m: max(r.metrics["gap"] for r in results.where(m=m)) for m in widths}
        spread = max((abs(r.metrics["test_error"] / r.metrics["test_error_convex"] - 1) for r in wide),
                     default=math.nan)
        flat = bool(wide) and all(
            abs(r.metrics["test_error"] - r.metrics["test_error_convex"])
            <= max(TEST_SPREAD * r.metrics["test_error_convex"], TEST_FLOOR) for r in wide)
        checks = {
            "m >= √(2N) reaches the convex optimum": bool(wide) and all(r.metrics["gap"] <= GAP
                                                                        for r in wide),
            "test error flat in m": flat,
            "rank-deficient control stays above": bool(control) and all(
                r.metrics["gap"] >= CONTROL_GAP for r in control),
        }
        failed = [k for k, ok in checks.items() if not ok]
        test = {m: float(np.median([r.metrics["test_error"] for r in results.where(m=m)])) for m in widths}
        rank = max(r.metrics["rank_convex"] for r in results)
        measured = (f"√(2N)={N_root:.1f}, rank of the convex optimum <= {rank}; worst relative gap to "
                    "the convex optimum: " + ", ".join(f"m={m}: {worst_gap[m]:.1e}" for m in widths)
                    + "; median test error: " + ", ".join(f"m={m}: {test[m]:.3g}" for m in widths)
                    + f" (widths >= √(2N) within {spread:.1%} of the convex solution's)")
        if failed:
            measured += "; failed: " + ", ".join(failed)
        return Verdict(not failed, measured, self.criterion, len(results),
                       details={"checks": checks, "worst_gap": worst_gap, "test_error": test,
                                "test_spread": spread})

    # -- figure ----------------------------------------------------------------------
    def figure(self, results: Results):
        import matplotlib.pyplot as plt

        N_root = results[0].metrics["sqrt_2N"]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
        for r in results:
            ax1.scatter(r.config["m"], max(r.metrics["gap"], 1e-16), color="C0", alpha=0.6)
            ax2.scatter(r.config["m"], r.metrics["test_error"], color="C1", alpha=0.6)
        for ax in (ax1, ax2):
            ax.axvline(N_root, color="k", ls="--", label="m = √(2N)")
            ax.set(xscale="log", xlabel="width m")
        ax1.axhline(GAP, color="C3", ls=":", label="tolerance")
        ax1.set(yscale="log", ylabel="(L − L*) / L*", title="gap to the convex optimum")
        ax2.axhline(float(np.median([r.metrics["test_error_convex"] for r in results])), color="C2",
                    ls=":", label="convex solution")
        ax2.set(ylabel="relative test MSE", title="test error vs width")
        ax1.legend(fontsize=8)
        ax2.legend(fontsize=8)
        fig.tight_layout()
        return fig


def _predict(M: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    return ((X @ M) * X).sum(-1)


def _objective(M: torch.Tensor, X: torch.Tensor, y: torch.Tensor, lam: float) -> float:
    return float(0.5 * ((_predict(M, X) - y) ** 2).mean() + lam / 2 * torch.trace(M))


def _convex_optimum(X: torch.Tensor, y: torch.Tensor, lam: float):
    """argmin_{M ⪰ 0} 1/(2N) Σ (x_iᵀMx_i − y_i)² + (λ/2) tr M by Clarabel, and its value.

    The program in Clarabel's form, x = (svec M, z): min (1/2N)‖z‖² + (λ/2) tr M s.t.
    z = A svec M − y (zero cone), svec M in the PSD cone, svec the upper triangle column by
    column with the off-diagonal entries scaled by √2 (Clarabel's PSDTriangleCone), so row i
    of A is x_i x_iᵀ in that basis. Built here rather than by cvxpy, whose handling of the
    data cost 2.5 ms of a smoke-shape solve even cached as a parametrized problem (the tests
    compare the two).
    """
    import clarabel
    import scipy.sparse as sp

    Xn, yn = X.detach().cpu().double().numpy(), y.detach().cpu().double().numpy()
    N, d = Xn.shape
    rows, cols = np.triu_indices(d)
    order = np.lexsort((rows, cols))  # column-major: (0,0), (0,1), (1,1), (0,2), …
    rows, cols = rows[order], cols[order]
    T = len(rows)
    scale = np.where(rows == cols, 1.0, math.sqrt(2.0))
    A_data = Xn[:, rows] * Xn[:, cols] * scale  # (N, T): ⟨x xᵀ, M⟩ = A_row · svec M
    k, t = np.arange(N), np.arange(T)
    ar, ac = np.nonzero(A_data)
    # rows 0..N−1: −A svec M + z = −y; rows N..N+T−1: −svec M + s = 0, s ∈ PSD
    A = sp.csc_matrix((np.concatenate([-A_data[ar, ac], np.ones(N), -np.ones(T)]),
                       (np.concatenate([ar, k, N + t]), np.concatenate([ac, T + k, t]))),
                      shape=(N + T, T + N))
    P = sp.csc_matrix((np.full(N, 1.0 / N), (T + k, T + k)), shape=(T + N, T + N))
    q = np.concatenate([np.where(rows == cols, lam / 2, 0.0), np.zeros(N)])
    b = np.concatenate([-yn, np.zeros(T)])
    solution = solve_conic(P, q, A, b, [clarabel.ZeroConeT(N), clarabel.PSDTriangleConeT(d)],
                           "quadratic-overparam-global-min: the convex program")
    m = np.asarray(solution.x[:T], dtype=float) / scale
    M_star = np.zeros((d, d))
    M_star[rows, cols] = m
    M_star[cols, rows] = m
    value = _objective(torch.as_tensor(M_star), X.detach().cpu().double(), y.detach().cpu().double(), lam)
    return M_star, value


CLAIM = QuadraticOverparamGlobalMin()
