"""The planted PSD low-rank matrix ``M* = U* U*ᵀ`` shared by the symmetric factorization problems."""

from __future__ import annotations

import math

import torch

from dltheory.errors import ConfigError
from dltheory.problems.base import Problem, _check_shape, _check_sizes, _relative_error


class _SymmetricLowRank(Problem):
    """``M* = U* U*ᵀ`` with ``U*`` an (n, rank) Gaussian matrix scaled by 1/√n (eigenvalues ≈ 1).

    Parameters are a factor ``U`` of shape (n, width), width ≥ rank (over-parametrized when
    larger); the recovery error ``‖UUᵀ − M*‖_F / ‖M*‖_F`` is invariant under U ↦ UQ, Q
    orthogonal, the symmetry of the factorization.
    """

    def __init__(self, n: int, rank: int, width: int | None, generator: torch.Generator, dtype, device):
        super().__init__(dtype, device)
        width = rank if width is None else width
        _check_sizes(type(self).__name__, n=n, rank=rank, width=width)
        if width < rank:
            raise ConfigError(f"{type(self).__name__}: width must be >= rank to contain the ground truth, "
                              f"got width={width} < rank={rank}")
        self.n, self.rank, self.width = n, rank, width
        self.U_star = self._randn(n, rank, generator=generator) / math.sqrt(n)
        self.M_star = self.U_star @ self.U_star.mT

    def _factor(self, params) -> torch.Tensor:
        _check_shape(type(self).__name__, "U", params, (self.n, self.width))
        return params

    def _from_factor(self, U: torch.Tensor):
        """The inverse of :meth:`_factor`: a factor as this problem's params."""
        return U

    def init(self, generator, scale=1.0):
        """Entries i.i.d. N(0, scale²/n): at scale 1 the same size as the ground truth."""
        U = scale * self._randn(self.n, self.width, generator=generator) / math.sqrt(self.n)
        return self._from_factor(U)

    @property
    def ground_truth(self):
        """``U*`` padded with zero columns to the factor width."""
        return self._from_factor(torch.nn.functional.pad(self.U_star, (0, self.width - self.rank)))

    def recovery_error(self, params) -> float:
        U = self._factor(params).detach()
        return _relative_error(U @ U.mT, self.M_star)

