"""Max-cut: the Burer–Monteiro factorization of its SDP relaxation."""

from __future__ import annotations

import math
import warnings
from functools import cached_property

import numpy as np
import torch

from dltheory.errors import SolverError
from dltheory.problems.base import Problem, _check_fraction, _check_shape, _check_sizes


def _smallest_benign_rank(n: int) -> int:
    """The least p with p(p+1)/2 > n (Boumal, Voroninski, Bandeira 2016)."""
    return math.floor((math.sqrt(8 * n + 1) - 1) / 2) + 1


class MaxCutBurerMonteiro(Problem):
    r"""The max-cut SDP of a random graph in Burer–Monteiro form.

    For the Laplacian L of an Erdős–Rényi graph G(n, edge_probability), the SDP relaxation
    ``max ¼⟨L, X⟩ s.t. X ⪰ 0, diag X = 1`` is factored as ``X = VVᵀ`` with V (n×p) on the
    oblique manifold (unit rows), and

    .. math:: f(V) = -\tfrac14 \langle L, VV^\top \rangle

    is minimized. For p(p+1)/2 > n, generically every second-order critical point is a
    global optimum (Boumal, Voroninski, Bandeira 2016) — the default rank; for p = 1, 2
    (p = 1 is max-cut itself) spurious local minima appear. The reference optimum is the
    SDP solved by cvxpy (``global_min_value = −SDP``; None if cvxpy cannot be imported),
    :attr:`ground_truth` a factor of its solution, and the recovery error the relative
    optimality gap ``(f(V) − f*)/|f*|``, invariant under V ↦ VQ. :meth:`round` gives the
    Goemans–Williamson cut.

    Parameters
    ----------
    n : number of vertices.
    rank : p, columns of V (default: the least p with p(p+1)/2 > n).
    edge_probability : probability of each edge, in (0, 1].
    generator, dtype, device : where the instance comes from and lives.

    References
    ----------
    Goemans, Williamson, "Improved approximation algorithms for maximum cut and
    satisfiability problems using semidefinite programming", J. ACM 1995.
    Burer, Monteiro, "A nonlinear programming algorithm for solving semidefinite programs via
    low-rank factorization", Math. Programming 2003.
    Boumal, Voroninski, Bandeira, "The non-convex Burer–Monteiro approach works on smooth
    semidefinite programs", NeurIPS 2016.
    """

    manifold = "oblique"
    tolerance = 1e-4

    def __init__(self, n: int, rank: int | None = None, *, edge_probability: float = 0.5,
                 generator: torch.Generator, dtype=torch.float64, device="cpu"):
        super().__init__(dtype, device)
        rank = _smallest_benign_rank(n) if rank is None else rank
        _check_sizes("MaxCutBurerMonteiro", n=n, rank=rank)
        _check_fraction("MaxCutBurerMonteiro", "edge_probability", edge_probability)
        self.n, self.rank = n, rank
        upper = torch.triu(self._rand(n, n, generator=generator) < edge_probability, diagonal=1)
        self.W = (upper | upper.mT).to(dtype)
        self.laplacian = torch.diag(self.W.sum(1)) - self.W

    def loss(self, params):
        _check_shape("MaxCutBurerMonteiro", "V", params, (self.n, self.rank))
        return -0.25 * (self.laplacian * (params @ params.mT)).sum()

    def init(self, generator, scale=1.0):
        """Rows uniform on the unit sphere S^{p−1} (``scale`` is ignored)."""
        g = self._randn(self.n, self.rank, generator=generator)
        return g / g.norm(dim=1, keepdim=True)

    def cut_value(self, x: torch.Tensor) -> float:
        """The weight of the cut of a ±1 vector x: ``¼ xᵀLx``."""
        return 0.25 * float(x @ self.laplacian @ x)

    def round(self, params, generator: torch.Generator, trials: int = 100) -> tuple[torch.Tensor, float]:
        """Goemans–Williamson rounding: the best of ``trials`` cuts ``sign(Vg)``, g ~ N(0, I_p)."""
        _check_shape("MaxCutBurerMonteiro", "V", params, (self.n, self.rank))
        signs = torch.sign(params.detach() @ self._randn(self.rank, trials, generator=generator))
        signs[signs == 0] = 1.0
        values = 0.25 * ((self.laplacian @ signs) * signs).sum(0)
        best = int(values.argmax())
        return signs[:, best], float(values[best])

    @cached_property
    def sdp_solution(self) -> torch.Tensor | None:
        """The optimal X of the SDP (cvxpy, Clarabel), or None if cvxpy is not importable."""
        try:
            import cvxpy as cp
        except ImportError:
            return None
        X = cp.Variable((self.n, self.n), PSD=True)
        laplacian = self.laplacian.cpu().numpy()
        diagonal = cp.diag(X) == 1
        problem = cp.Problem(cp.Maximize(0.25 * cp.trace(laplacian @ X)), [diagonal])
        # tight tolerances: the factor of X* serves as a ground truth with (near) zero gradient.
        # At these tolerances Clarabel may report "optimal_inaccurate" for an answer that is
        # fine, so the status is not trusted either way: the dual certificate is checked.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Solution may be inaccurate")
            problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
        if X.value is None or problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            raise SolverError(f"MaxCutBurerMonteiro: the SDP solver returned status {problem.status}")
        primal = 0.25 * float(np.sum(laplacian * X.value))
        y = np.abs(np.asarray(diagonal.dual_value, dtype=float))
        # weak duality: Diag(y) − L/4 ⪰ 0 certifies Σy ≥ every cut value of the SDP
        slack = float(np.linalg.eigvalsh(np.diag(y) - 0.25 * laplacian).min())
        gap = (float(y.sum()) - primal) / max(abs(primal), 1.0)
        if slack < -1e-6 * max(abs(primal), 1.0) or abs(gap) > 1e-6:
            raise SolverError(f"MaxCutBurerMonteiro: the SDP answer fails its dual certificate "
                              f"(gap {gap:.1e}, slack {slack:.1e})")
        return torch.as_tensor(np.asarray(X.value), dtype=self.dtype, device=self.device)

    @property
    def global_min_value(self):
        X = self.sdp_solution
        return None if X is None else -0.25 * float((self.laplacian * X).sum())

    @property
    def ground_truth(self):
        """A rank-p factor of the SDP solution, rows renormalized (exact when rank X* ≤ p)."""
        X = self.sdp_solution
        if X is None:
            raise SolverError("MaxCutBurerMonteiro: the reference optimum needs cvxpy (pip install cvxpy)")
        eigenvalues, vectors = torch.linalg.eigh(X)
        V = vectors[:, -self.rank:] * eigenvalues[-self.rank:].clamp(min=0).sqrt()
        return V / V.norm(dim=1, keepdim=True)

    def recovery_error(self, params):
        f_star = self.global_min_value
        if f_star is None:
            raise SolverError("MaxCutBurerMonteiro: the reference optimum needs cvxpy (pip install cvxpy)")
        return (float(self.loss(params.detach())) - f_star) / abs(f_star)
