"""Helpers shared by the optimizers: argument checks, the closure protocol, flat vectors."""

from __future__ import annotations

import math

import torch


def _check_nonnegative(name: str, value) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"Invalid {name}: {value}")


def _check_positive(name: str, value) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"Invalid {name}: {value}")


def _check_generator(generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"Invalid generator: {generator!r} (pass a torch.Generator; no global RNG)")


def _evaluate(closure):
    """Call the closure with gradients enabled, as ``torch.optim.SGD.step`` does."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def _require_closure(closure, optimizer: str) -> None:
    if closure is None:
        raise ValueError(f"{optimizer}.step needs a closure that recomputes the loss and its gradient")


def _flat_grad(params) -> torch.Tensor:
    """All gradients as one vector; a parameter without a gradient contributes zeros."""
    return torch.cat([
        (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params
    ])


def _add_flat(params, vector: torch.Tensor, alpha: float = 1.0) -> None:
    """``params += alpha * vector`` with ``vector`` laid out as in :func:`_flat_grad`."""
    offset = 0
    for p in params:
        p.add_(vector[offset:offset + p.numel()].view_as(p), alpha=alpha)
        offset += p.numel()


class _SingleGroup:
    """Mixin for optimizers whose update couples all parameters into one vector.

    A norm of the whole parameter vector (steepest descent, perturbed GD) or one global
    coordinate index (coordinate descent) has no meaning per group, so one group only.
    """

    def add_param_group(self, param_group):
        if self.param_groups:
            raise ValueError(
                f"Invalid second parameter group: {type(self).__name__} treats all parameters as one "
                "vector and takes a single parameter group"
            )
        super().add_param_group(param_group)

    @property
    def _params(self):
        return self.param_groups[0]["params"]
