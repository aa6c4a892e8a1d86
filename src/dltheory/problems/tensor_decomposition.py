"""Orthogonal 4th-order tensor decomposition on a product of spheres (Ge et al. 2015)."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

from dltheory.errors import ConfigError
from dltheory.problems.base import Problem, _check_shape, _check_sizes


class OrthogonalTensorDecomposition(Problem):
    r"""Recover the components of ``T = Σ_{l=1}^d a_l^{⊗4}``, ``{a_l}`` an orthonormal basis of ℝᵈ.

    Over d unit vectors u_i (the rows of U, a point of the oblique manifold),

    .. math:: f(U) = \sum_{i \ne j} T(u_i, u_i, u_j, u_j)
              = \sum_{i\ne j} \sum_l (a_l^\top u_i)^2 (a_l^\top u_j)^2

    (Ge et al. 2015, §3.2). Its global minimum 0 is attained exactly at signed permutations
    of the a_l, all local minima are global and the saddles are strict, so projected or
    Riemannian (S)GD recovers the whole decomposition. Recovery error: the largest
    ``min(‖u_i − a‖, ‖u_i + a‖)`` under the best matching of rows to components.

    Parameters
    ----------
    d : dimension (= number of components).
    generator, dtype, device : where the instance comes from and lives.

    References
    ----------
    Ge, Huang, Jin, Yuan, "Escaping from saddle points — online stochastic gradient for
    tensor decomposition", COLT 2015.
    """

    manifold = "oblique"

    def __init__(self, d: int, *, generator: torch.Generator, dtype=torch.float64, device="cpu"):
        super().__init__(dtype, device)
        _check_sizes("OrthogonalTensorDecomposition", d=d)
        if d < 2:
            raise ConfigError(f"OrthogonalTensorDecomposition: d must be >= 2, got {d}")
        self.d = d
        self.components = self._random_orthogonal(d, generator)

    def tensor(self) -> torch.Tensor:
        """The d×d×d×d tensor T (for inspection; the loss never forms it)."""
        a = self.components
        return torch.einsum("li,lj,lk,lm->ijkm", a, a, a, a)

    def loss(self, params):
        _check_shape("OrthogonalTensorDecomposition", "U", params, (self.d, self.d))
        P = (params @ self.components.mT) ** 2  # P_il = (a_lᵀu_i)²
        return (P.sum(0) ** 2 - (P ** 2).sum(0)).sum()

    def init(self, generator, scale=1.0):
        """Rows uniform on the unit sphere (``scale`` is ignored: the problem lives on a manifold)."""
        g = self._randn(self.d, self.d, generator=generator)
        return g / g.norm(dim=1, keepdim=True)

    @property
    def ground_truth(self):
        return self.components.clone()

    def recovery_error(self, params):
        _check_shape("OrthogonalTensorDecomposition", "U", params, (self.d, self.d))
        U = params.detach()
        difference = U[:, None, :] - self.components[None, :, :]
        total = U[:, None, :] + self.components[None, :, :]
        # distance[i, l] = min(‖u_i − a_l‖, ‖u_i + a_l‖): components are defined up to sign
        distance = torch.minimum(difference.norm(dim=-1), total.norm(dim=-1))
        rows, cols = linear_sum_assignment(distance.cpu().numpy())
        return float(distance[rows, cols].max())
