"""Real Gaussian phase retrieval with the smooth quartic loss."""

from __future__ import annotations

import math

import torch

from dltheory.problems.base import Problem, _check_shape, _check_sizes


class PhaseRetrieval(Problem):
    r"""Recover ``x* ∈ ℝⁿ`` (unit norm) from ``y_i = (a_iᵀx*)²``, ``a_i ~ N(0, I_n)``:

    .. math:: f(x) = \frac1{4m} \sum_{i=1}^m \bigl((a_i^\top x)^2 - y_i\bigr)^2 .

    The global minimizers are ±x*; with m ≳ n log³ n all local minima are global and the
    other critical points are strict saddles (Sun, Qu, Wright 2018). Recovery error
    ``min(‖x − x*‖, ‖x + x*‖)``.

    Parameters
    ----------
    n : signal dimension.
    measurements : number m of measurements.
    generator, dtype, device : where the instance comes from and lives.

    References
    ----------
    Sun, Qu, Wright, "A geometric analysis of phase retrieval", Found. Comput. Math. 2018.
    Candès, Li, Soltanolkotabi, "Phase retrieval via Wirtinger flow", IEEE Trans. Inf. Theory 2015.
    """

    def __init__(self, n: int, measurements: int, *, generator: torch.Generator, dtype=torch.float64,
                 device="cpu"):
        super().__init__(dtype, device)
        _check_sizes("PhaseRetrieval", n=n, measurements=measurements)
        self.n, self.measurements = n, measurements
        x = self._randn(n, generator=generator)
        self.x_star = x / x.norm()
        self.A = self._randn(measurements, n, generator=generator)
        self.y = (self.A @ self.x_star) ** 2

    def loss(self, params):
        _check_shape("PhaseRetrieval", "x", params, (self.n,))
        return 0.25 * (((self.A @ params) ** 2 - self.y) ** 2).mean()

    def init(self, generator, scale=1.0):
        """Entries i.i.d. N(0, scale²/n) (norm ≈ scale)."""
        return scale * self._randn(self.n, generator=generator) / math.sqrt(self.n)

    @property
    def ground_truth(self):
        return self.x_star.clone()

    def recovery_error(self, params):
        _check_shape("PhaseRetrieval", "x", params, (self.n,))
        x = params.detach()
        return float(torch.minimum((x - self.x_star).norm(), (x + self.x_star).norm()))
