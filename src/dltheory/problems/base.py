"""The interface every problem with a known ground truth shares."""

from __future__ import annotations

import torch

from dltheory.errors import ConfigError, ShapeError


class Problem:
    """A non-convex objective whose global minimizers are known.

    Attributes and methods every problem provides:

    * ``loss(params)`` — the objective, a scalar tensor; ``params`` a tensor or a dict of
      tensors. Written with pure tensor operations, so ``torch.func.vmap(problem.loss)``
      evaluates many seeds' parameters at once.
    * ``init(generator, scale=1.0)`` — a random starting point; ``scale`` multiplies the
      problem's natural scale (``scale=1e-3`` is a small initialization). Problems posed on
      a manifold return a random point of it and ignore ``scale``.
    * ``ground_truth`` — one global minimizer (the planted solution).
    * ``global_min_value`` — the optimal value, or None where no closed form exists.
    * ``recovery_error(params)`` — distance to the set of global minimizers, relative and up
      to the problem's symmetry (rotations of a factorization, signs, permutations).
    * ``success(params, tol=None)`` — ``recovery_error(params) <= tol`` (default
      ``self.tolerance``).
    * ``manifold`` — None for unconstrained problems, else the name of the constraint set
      (``"sphere"``, ``"oblique"``) understood by :class:`dltheory.optim.RiemannianGD`.
    """

    manifold: str | None = None
    tolerance: float = 1e-3

    def __init__(self, dtype: torch.dtype, device):
        self.dtype, self.device = dtype, torch.device(device)

    def loss(self, params) -> torch.Tensor:
        raise NotImplementedError

    def init(self, generator: torch.Generator, scale: float = 1.0):
        raise NotImplementedError

    @property
    def ground_truth(self):
        raise NotImplementedError

    @property
    def global_min_value(self) -> float | None:
        return 0.0

    def recovery_error(self, params) -> float:
        raise NotImplementedError

    def success(self, params, tol: float | None = None) -> bool:
        """Whether ``params`` recovers the ground truth: ``recovery_error(params) <= tol``."""
        return self.recovery_error(params) <= (self.tolerance if tol is None else tol)

    def _randn(self, *shape, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=self.dtype, device=self.device)

    def _rand(self, *shape, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(shape, generator=generator, dtype=self.dtype, device=self.device)

    def _random_orthogonal(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Haar-distributed orthogonal matrix (QR of a Gaussian with the signs of diag R fixed)."""
        q, r = torch.linalg.qr(self._randn(n, n, generator=generator))
        return q * torch.sign(torch.diagonal(r))


def _check_sizes(problem: str, **sizes) -> None:
    for name, value in sizes.items():
        if not (isinstance(value, int) and value >= 1):
            raise ConfigError(f"{problem}: {name} must be a positive integer, got {value!r}")


def _check_fraction(problem: str, name: str, value, *, closed: bool = True) -> None:
    ok = 0 < value <= 1 if closed else 0 < value < 1
    if not (isinstance(value, (int, float)) and ok):
        raise ConfigError(f"{problem}: {name} must be in (0, 1{']' if closed else ')'}, got {value!r}")


def _check_shape(problem: str, name: str, tensor, shape: tuple) -> None:
    if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != tuple(shape):
        got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ShapeError(f"{problem}: {name} must have shape {tuple(shape)}, got {got}")


def _relative_error(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    return float(torch.linalg.norm(estimate - truth) / torch.linalg.norm(truth))
