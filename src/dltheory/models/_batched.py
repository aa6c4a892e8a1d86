"""Seed-batched modules: parameters stacked along a leading seed axis.

Every model of this package holds the parameters of ``S`` independent networks, one per
``torch.Generator`` it was built from, stacked along dimension 0. Seed ``k`` draws its
parameters from ``generators[k]`` alone, in the order the unbatched network would, so the
``k``-th slice equals the parameters of the same model built from ``[generators[k]]``;
forward passes are batched matmuls over that axis. A loss summed over seeds has, in each
slice, the gradient of that seed's own loss, so one optimizer step trains all seeds.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from dltheory.errors import ConfigError, ShapeError

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "square": torch.square,
    "tanh": torch.tanh,
    "softplus": nn.functional.softplus,
    "identity": lambda z: z,
}


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation called ``name`` (one of :data:`ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose one of: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def c_sigma(name: str) -> float:
    """``c_σ = 1 / E[σ(z)²]`` for ``z ~ N(0, 1)``: the factor that keeps ``‖x⁽ʰ⁾‖ ≈ 1``.

    Du, Lee, Li, Wang, Zhai 2019 (eq. 3) scale each layer by ``√(c_σ/m)``; ReLU gives
    ``c_σ = 2`` (He initialization). Computed by 200-point Gauss–Hermite quadrature, exact
    for polynomial activations and to ~1e-4 for ReLU's kink.
    """
    z, w = np.polynomial.hermite_e.hermegauss(200)
    sigma = get_activation(name)(torch.from_numpy(z)).numpy()
    return float(math.sqrt(2 * math.pi) / (w * sigma ** 2).sum())


def check_positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


class SeedBatched(nn.Module):
    """Base of the seed-batched models: input checks, per-seed draws, one seed's copy.

    Subclasses set ``self.d`` (input dimension) and build their tensors with
    :meth:`_draw`; ``forward`` maps ``x`` to outputs of shape ``(S, n)``.
    """

    def __init__(self, generators: Sequence[torch.Generator], dtype: torch.dtype,
                 device: str | torch.device):
        super().__init__()
        if isinstance(generators, torch.Generator):
            raise ConfigError("generators must be a list of torch.Generator (one per seed), "
                              "got a single generator; wrap it in a list")
        generators = list(generators)
        if not generators or not all(isinstance(g, torch.Generator) for g in generators):
            raise ConfigError("generators must be a non-empty list of torch.Generator "
                              "(one per seed)")
        self.generators = generators
        self.dtype, self.device = dtype, torch.device(device)

    @property
    def n_seeds(self) -> int:
        return len(self.generators)

    def _draw(self, *shapes: tuple[int, ...]) -> list[torch.Tensor]:
        """Standard normal tensors of ``shapes``, stacked over seeds; seed k draws from
        ``generators[k]`` in the order the shapes are given."""
        per_seed = [[torch.randn(s, generator=g, dtype=self.dtype, device=self.device)
                     for s in shapes] for g in self.generators]
        return [torch.stack(ts) for ts in zip(*per_seed)]

    def _signs(self, m: int) -> torch.Tensor:
        """Uniform ±1 of shape (S, m), one draw per seed from its own generator."""
        return torch.stack([
            torch.randint(0, 2, (m,), generator=g, device=self.device).to(self.dtype) * 2 - 1
            for g in self.generators])

    def batch_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` of shape (n, d) (shared by all seeds) or (S, n, d), checked."""
        if not isinstance(x, torch.Tensor):
            raise ShapeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() not in (2, 3) or x.shape[-1] != self.d:
            raise ShapeError(f"input must have shape (n, {self.d}) or ({self.n_seeds}, n, "
                             f"{self.d}), got {tuple(x.shape)}")
        if x.dim() == 3 and x.shape[0] != self.n_seeds:
            raise ShapeError(f"a batched input needs {self.n_seeds} seeds on dim 0, got "
                             f"{x.shape[0]}")
        if not torch.isfinite(x).all():
            raise ShapeError("input contains NaN or inf")
        return x.to(self.dtype)

    def seed(self, k: int) -> "SeedBatched":
        """A one-seed copy holding seed ``k``'s parameters (and buffers)."""
        if not -self.n_seeds <= k < self.n_seeds:
            raise ConfigError(f"seed index {k} out of range for {self.n_seeds} seeds")
        k %= self.n_seeds
        # The generators are shared, not copied: seed k's copy keeps drawing from its own.
        single = copy.deepcopy(self, memo={id(g): g for g in self.generators})
        for module in single.modules():
            for name, p in module._parameters.items():
                if p is not None:
                    module._parameters[name] = nn.Parameter(p.detach()[k:k + 1].clone(),
                                                            requires_grad=p.requires_grad)
            for name, b in module._buffers.items():
                if b is not None:
                    module._buffers[name] = b[k:k + 1].clone()
        single.generators = [self.generators[k]]
        return single
