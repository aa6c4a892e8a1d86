"""Strict-saddle test functions with known critical points."""

from __future__ import annotations

import math

import torch

from dltheory.errors import ConfigError
from dltheory.problems.base import Problem, _check_shape, _check_sizes


class StrictSaddle(Problem):
    r"""A separable function with a strict saddle at the origin and 2^s global minima.

    For w ∈ ℝᵈ whose first s coordinates curve down at 0,

    .. math:: f(w) = \sum_{i<s} \Bigl(\frac{w_i^4}{4} - \gamma\frac{w_i^2}{2}\Bigr)
              + \sum_{i \ge s} \frac{w_i^2}{2}

    (d = 2, s = 1, γ = 1 is ``x²/2 + y⁴/4 − y²/2`` with the roles of x, y swapped). Critical
    points: each of the first s coordinates in {0, ±√γ}, the rest 0. The minima have all of
    them at ±√γ, value ``−sγ²/4``; the others are strict saddles, λ_min(∇²f) = −γ, the
    origin among them. Its stable manifold under GD is ``{w : w_i = 0, i < s}``
    (:meth:`stable_manifold_point`): GD started there converges to the saddle.

    Parameters
    ----------
    dim : d ≥ 1.
    negative_dims : s, 1 ≤ s ≤ d.
    gamma : γ > 0, the negative curvature at the saddle.
    dtype, device : where the tensors live (the function has no randomness).

    References
    ----------
    Ge, Huang, Jin, Yuan, "Escaping from saddle points — online stochastic gradient for
    tensor decomposition", COLT 2015 (strict-saddle property).
    Lee, Simchowitz, Jordan, Recht, "Gradient descent only converges to minimizers", COLT 2016.
    Jin, Ge, Netrapalli, Kakade, Jordan, "How to escape saddle points efficiently", ICML 2017.
    """

    def __init__(self, dim: int = 2, negative_dims: int = 1, *, gamma: float = 1.0, dtype=torch.float64,
                 device="cpu"):
        super().__init__(dtype, device)
        _check_sizes("StrictSaddle", dim=dim, negative_dims=negative_dims)
        if negative_dims > dim or not gamma > 0:
            raise ConfigError(f"StrictSaddle: need 1 <= negative_dims <= dim and gamma > 0, got "
                              f"negative_dims={negative_dims}, dim={dim}, gamma={gamma}")
        self.dim, self.negative_dims, self.gamma = dim, negative_dims, float(gamma)
        self._down = torch.arange(dim, device=self.device) < negative_dims

    def loss(self, params):
        _check_shape("StrictSaddle", "w", params, (self.dim,))
        w2 = params ** 2
        return torch.where(self._down, w2 ** 2 / 4 - self.gamma * w2 / 2, w2 / 2).sum()

    def init(self, generator, scale=1.0):
        """Entries i.i.d. N(0, scale²)."""
        return scale * self._randn(self.dim, generator=generator)

    @property
    def saddle(self) -> torch.Tensor:
        """The strict saddle at the origin."""
        return torch.zeros(self.dim, dtype=self.dtype, device=self.device)

    def stable_manifold_point(self, generator, scale=1.0) -> torch.Tensor:
        """A random point of the saddle's stable manifold (the first s coordinates exactly 0)."""
        return torch.where(self._down, 0.0, self.init(generator, scale))

    def hessian(self, params) -> torch.Tensor:
        """The (diagonal) Hessian in closed form."""
        return torch.diag(torch.where(self._down, 3 * params ** 2 - self.gamma, torch.ones_like(params)))

    @property
    def ground_truth(self):
        return torch.where(self._down, math.sqrt(self.gamma), 0.0).to(self.dtype)

    @property
    def global_min_value(self):
        return -self.negative_dims * self.gamma ** 2 / 4

    def recovery_error(self, params):
        """Distance to the nearest global minimizer."""
        _check_shape("StrictSaddle", "w", params, (self.dim,))
        w = params.detach()
        return float(torch.where(self._down, w.abs() - math.sqrt(self.gamma), w).norm())
