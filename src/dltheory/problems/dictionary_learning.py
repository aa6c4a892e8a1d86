"""Complete (orthogonal) dictionary learning over the sphere (Sun, Qu, Wright)."""

from __future__ import annotations

import math

import torch

from dltheory.errors import ConfigError
from dltheory.problems.base import Problem, _check_fraction, _check_shape, _check_sizes


def _log_cosh(z: torch.Tensor) -> torch.Tensor:
    # log cosh z = |z| + log(1 + e^{−2|z|}) − log 2, finite for large |z|
    return z.abs() + torch.log1p(torch.exp(-2 * z.abs())) - math.log(2.0)


class DictionaryLearning(Problem):
    r"""Find one column of an orthogonal dictionary from ``Y = A₀X₀``, X₀ sparse.

    ``A₀`` is a random n×n orthogonal matrix and ``X₀`` (n × samples) is Bernoulli(θ)–Gaussian.
    Over the unit sphere,

    .. math:: f(q) = \frac1p \sum_{k=1}^p h_\mu(q^\top y_k), \qquad
              h_\mu(z) = \mu \log\cosh(z/\mu),

    a smooth surrogate of ‖qᵀY‖₁ whose qᵀY is sparsest at ``q = ±A₀e_i``. For θ ≲ 1/2,
    μ small and samples ≳ n³ all local minimizers are within O(μ) of the signed columns of
    A₀ and every other critical point is a strict saddle (Sun, Qu, Wright 2017, Theorem 2.3).
    The exact minimizers carry that O(μ) bias, so there is no closed-form optimal value
    (``global_min_value`` is None) and :attr:`ground_truth` (the column A₀e₁) is a global
    minimizer only up to O(μ). Recovery error: ``min_{i,±} ‖q ∓ A₀e_i‖``.

    Parameters
    ----------
    n : dimension.
    samples : number p of columns of Y.
    theta : sparsity θ in (0, 1): probability that an entry of X₀ is nonzero.
    mu : smoothing μ > 0.
    generator, dtype, device : where the instance comes from and lives.

    References
    ----------
    Sun, Qu, Wright, "Complete dictionary recovery over the sphere I: overview and the
    geometric picture", IEEE Trans. Inf. Theory 2017.
    """

    manifold = "sphere"
    tolerance = 5e-2

    def __init__(self, n: int, samples: int, *, theta: float = 0.3, mu: float = 1e-2,
                 generator: torch.Generator, dtype=torch.float64, device="cpu"):
        super().__init__(dtype, device)
        _check_sizes("DictionaryLearning", n=n, samples=samples)
        _check_fraction("DictionaryLearning", "theta", theta, closed=False)
        if not mu > 0:
            raise ConfigError(f"DictionaryLearning: mu must be > 0, got {mu}")
        self.n, self.samples, self.theta, self.mu = n, samples, theta, mu
        self.dictionary = self._random_orthogonal(n, generator)
        support = self._rand(n, samples, generator=generator) < theta
        self.X0 = torch.where(support, self._randn(n, samples, generator=generator), 0.0)
        self.Y = self.dictionary @ self.X0

    def loss(self, params):
        _check_shape("DictionaryLearning", "q", params, (self.n,))
        return self.mu * _log_cosh((params @ self.Y) / self.mu).mean()

    def init(self, generator, scale=1.0):
        """Uniform on the unit sphere (``scale`` is ignored)."""
        g = self._randn(self.n, generator=generator)
        return g / g.norm()

    @property
    def ground_truth(self):
        return self.dictionary[:, 0].clone()

    @property
    def global_min_value(self):
        return None

    def recovery_error(self, params):
        _check_shape("DictionaryLearning", "q", params, (self.n,))
        q = params.detach()
        columns = self.dictionary.mT
        return float(torch.minimum((q - columns).norm(dim=1), (q + columns).norm(dim=1)).min())
