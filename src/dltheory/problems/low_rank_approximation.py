"""Best rank-k approximation in factored form (Baldi–Hornik)."""

from __future__ import annotations

import math

import torch

from dltheory.errors import ConfigError
from dltheory.problems.base import Problem, _check_shape, _check_sizes, _relative_error


class LowRankApproximation(Problem):
    r"""``f(U, V) = ½ ‖M − UVᵀ‖_F²`` over U (n1×k), V (n2×k): PCA as a two-layer linear network.

    By Eckart–Young the minimum is ``½ Σ_{i>k} σ_i(M)²``, attained where ``UVᵀ = M_k``, the
    truncated SVD; when the singular values are distinct every other critical point (any
    other choice of k singular pairs) is a saddle, so all local minima are global (Baldi &
    Hornik 1989). M has i.i.d. N(0, 1/max(n1, n2)) entries (distinct singular values almost
    surely). Params are ``{"U": (n1, k), "V": (n2, k)}``; the recovery error
    ``‖UVᵀ − M_k‖_F / ‖M_k‖_F`` is invariant under U ↦ UG, V ↦ VG⁻ᵀ.

    Parameters
    ----------
    n1, n2 : shape of M.
    rank : k < min(n1, n2).
    generator, dtype, device : where the instance comes from and lives.

    References
    ----------
    Baldi, Hornik, "Neural networks and principal component analysis: learning from examples
    without local minima", Neural Networks 1989.
    Eckart, Young, "The approximation of one matrix by another of lower rank",
    Psychometrika 1936.
    """

    def __init__(self, n1: int, n2: int, rank: int, *, generator: torch.Generator, dtype=torch.float64,
                 device="cpu"):
        super().__init__(dtype, device)
        _check_sizes("LowRankApproximation", n1=n1, n2=n2, rank=rank)
        if rank >= min(n1, n2):
            raise ConfigError(f"LowRankApproximation: rank must be < min(n1, n2) = {min(n1, n2)}, got {rank}")
        self.n1, self.n2, self.rank = n1, n2, rank
        self.M = self._randn(n1, n2, generator=generator) / math.sqrt(max(n1, n2))
        self._P, self._S, Qh = torch.linalg.svd(self.M, full_matrices=False)
        self._Q = Qh.mT
        self.M_k = (self._P[:, :rank] * self._S[:rank]) @ self._Q[:, :rank].mT

    def _factors(self, params):
        if not isinstance(params, dict) or set(params) != {"U", "V"}:
            raise ConfigError("LowRankApproximation: params must be a dict with keys 'U' and 'V'")
        _check_shape("LowRankApproximation", "U", params["U"], (self.n1, self.rank))
        _check_shape("LowRankApproximation", "V", params["V"], (self.n2, self.rank))
        return params["U"], params["V"]

    def loss(self, params):
        U, V = self._factors(params)
        return 0.5 * ((self.M - U @ V.mT) ** 2).sum()

    def init(self, generator, scale=1.0):
        """Entries i.i.d. N(0, scale²/n1) and N(0, scale²/n2)."""
        return {"U": scale * self._randn(self.n1, self.rank, generator=generator) / math.sqrt(self.n1),
                "V": scale * self._randn(self.n2, self.rank, generator=generator) / math.sqrt(self.n2)}

    def critical_point(self, indices) -> dict:
        """The critical point built from the singular pairs ``indices`` (a saddle unless the top k)."""
        idx = torch.as_tensor(list(indices))
        if idx.numel() != self.rank:
            raise ConfigError(f"LowRankApproximation: need {self.rank} singular indices, got {idx.tolist()}")
        root = self._S[idx].sqrt()
        return {"U": self._P[:, idx] * root, "V": self._Q[:, idx] * root}

    @property
    def ground_truth(self):
        return self.critical_point(range(self.rank))

    @property
    def global_min_value(self):
        return 0.5 * float((self._S[self.rank:] ** 2).sum())

    def recovery_error(self, params):
        U, V = self._factors(params)
        return _relative_error((U @ V.mT).detach(), self.M_k)
