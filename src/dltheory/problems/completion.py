"""Matrix completion and robust PCA in symmetric factored form."""

from __future__ import annotations

import torch

from dltheory.errors import ConfigError
from dltheory.problems._factorization import _SymmetricLowRank
from dltheory.problems.base import _check_fraction


class MatrixCompletion(_SymmetricLowRank):
    r"""Symmetric matrix completion from uniformly sampled entries (Ge, Lee, Ma 2016).

    Entries (i, j), i ≤ j, of ``M* = U*U*ᵀ`` are observed independently with probability p
    (Ω symmetric), and

    .. math:: f(U) = \frac1{2p} \sum_{(i,j)\in\Omega} \bigl((UU^\top)_{ij} - M^*_{ij}\bigr)^2
              + \lambda \sum_i (\|e_i^\top U\| - \alpha)_+^4,

    the second term the incoherence regularizer of Ge, Lee, Ma 2016 (λ = 0 by default; their
    theorem needs λ > 0, experiments rarely do). The Gaussian ``U*`` is incoherent with
    high probability; the default α is twice its largest row norm, so the ground truth pays
    no regularization. With p ≳ rank⁶ log n / n (their bound; far less suffices in practice)
    all local minima are global.

    Parameters
    ----------
    n, rank : size and rank of M*.
    p : sampling probability in (0, 1].
    width : columns of the factor (default: rank).
    reg : λ ≥ 0.
    alpha : row-norm threshold α > 0 (default: 2 max_i ‖e_iᵀU*‖).
    generator, dtype, device : where the instance comes from and lives.

    References
    ----------
    Ge, Lee, Ma, "Matrix completion has no spurious local minimum", NeurIPS 2016.
    """

    def __init__(self, n: int, rank: int, p: float, *, width: int | None = None, reg: float = 0.0,
                 alpha: float | None = None, generator: torch.Generator, dtype=torch.float64, device="cpu"):
        super().__init__(n, rank, width, generator, dtype, device)
        _check_fraction("MatrixCompletion", "p", p)
        if not reg >= 0:
            raise ConfigError(f"MatrixCompletion: reg must be >= 0, got {reg}")
        self.p, self.reg = p, reg
        self.alpha = 2 * float(self.U_star.norm(dim=1).max()) if alpha is None else alpha
        if not self.alpha > 0:
            raise ConfigError(f"MatrixCompletion: alpha must be > 0, got {alpha}")
        upper = torch.triu(self._rand(n, n, generator=generator) < p)
        self.mask = (upper | upper.mT).to(dtype)

    def loss(self, params):
        U = self._factor(params)
        fit = 0.5 / self.p * ((self.mask * (U @ U.mT - self.M_star)) ** 2).sum()
        if self.reg == 0:
            return fit
        excess = torch.clamp(torch.linalg.vector_norm(U, dim=1) - self.alpha, min=0)
        return fit + self.reg * (excess ** 4).sum()


class RobustPCA(_SymmetricLowRank):
    r"""Robust PCA: a PSD low-rank matrix plus sparse outliers, fit with the ℓ1 loss.

    ``M = M* + S*`` with ``M* = U*U*ᵀ`` and ``S*`` symmetric, nonzero on a random fraction
    ``corruption`` of the entries with values uniform in ``[−c, c]``,
    ``c = outlier_scale · max|M*_{ij}|``, and

    .. math:: f(U) = \frac1{n^2} \|UU^\top - M\|_1 .

    The loss is non-smooth: train it with a subgradient method and geometrically decaying
    steps (Li et al. 2020), e.g. :class:`dltheory.optim.GD` with
    ``torch.optim.lr_scheduler.ExponentialLR``. When the corruption is sparse enough the
    planted ``U*`` is a global minimizer and ``global_min_value = ‖S*‖₁/n²``; that is the
    theorem's conclusion under its assumptions, not a closed form for every instance.

    Parameters
    ----------
    n, rank : size and rank of M*.
    corruption : fraction of corrupted entries in (0, 1).
    width : columns of the factor (default: rank).
    outlier_scale : outlier magnitude relative to the largest entry of M*.
    generator, dtype, device : where the instance comes from and lives.

    References
    ----------
    Candès, Li, Ma, Wright, "Robust principal component analysis?", J. ACM 2011.
    Li, Zhu, So, Vidal, "Nonconvex robust low-rank matrix recovery", SIAM J. Optim. 2020.
    Ding, Drusvyatskiy, Fazel, Harchaoui, "Flat minima generalize for low-rank matrix
    recovery", Information and Inference 2024.
    """

    def __init__(self, n: int, rank: int, corruption: float, *, width: int | None = None,
                 outlier_scale: float = 10.0, generator: torch.Generator, dtype=torch.float64, device="cpu"):
        super().__init__(n, rank, width, generator, dtype, device)
        _check_fraction("RobustPCA", "corruption", corruption, closed=False)
        upper = torch.triu(self._rand(n, n, generator=generator) < corruption)
        values = torch.triu(outlier_scale * float(self.M_star.abs().max())
                            * (2 * self._rand(n, n, generator=generator) - 1))
        self.S_star = torch.where(upper, values, torch.zeros_like(values))
        self.S_star = self.S_star + torch.triu(self.S_star, diagonal=1).mT
        self.M = self.M_star + self.S_star

    def loss(self, params):
        U = self._factor(params)
        return (U @ U.mT - self.M).abs().sum() / self.n ** 2

    @property
    def global_min_value(self):
        return float(self.S_star.abs().sum()) / self.n ** 2

    def hessian_trace(self, params) -> torch.Tensor:
        r"""The trace of the Hessian of the ℓ1 loss where it is twice differentiable.

        Off the kinks (no residual entry ``(UUᵀ − M)_{ij}`` exactly 0) the loss is the quadratic
        ``(1/n²) Σ s_{ij} (UUᵀ − M)_{ij}`` with fixed signs s, and the trace of the Hessian of
        ``u_iᵀu_j`` is ``2k·[i = j]`` (k the factor width), so

        .. math:: \operatorname{tr} \nabla^2 f(U)
                  = \frac{2k}{n^2} \sum_i \operatorname{sign}(UU^\top - M)_{ii} :

        piecewise constant, its gradient zero. It is therefore no flatness measure for this
        formulation, whose minimizers do not interpolate; the smooth, interpolating
        formulation whose flattest minimizer is the principal component pursuit split is
        :class:`~dltheory.problems.FactoredRobustPCA`.
        """
        U = self._factor(params)
        signs = torch.sign(torch.diagonal(U @ U.mT - self.M))
        return 2 * self.width * signs.sum() / self.n ** 2
