"""Run an optimizer on a functional loss ``loss(params)``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MinimizeResult:
    """Final parameters (same structure as the initialization) and the loss before each step.

    ``diverged`` is True when the loss became NaN/inf; the run stopped there.
    """

    params: torch.Tensor | dict[str, torch.Tensor]
    losses: torch.Tensor
    diverged: bool


def minimize(loss, init, optimizer, *, steps: int, **options) -> MinimizeResult:
    """Minimize ``loss(params)`` from ``init`` with ``optimizer(leaves, **options)`` for ``steps`` steps.

    Parameters
    ----------
    loss : callable ``loss(params) -> scalar tensor``, ``params`` a tensor or a dict of tensors.
    init : the starting point (not modified; copied into leaf tensors).
    optimizer : a ``torch.optim.Optimizer`` class, e.g. :class:`~dltheory.optim.GD`.
    steps : number of ``optimizer.step(closure)`` calls.
    **options : keyword arguments of the optimizer (``lr=...``).

    Returns
    -------
    MinimizeResult

    Examples
    --------
    >>> from dltheory.optim import GD
    >>> result = minimize(lambda w: ((w - 3) ** 2).sum(), torch.zeros(2), GD, steps=50, lr=0.25)
    >>> result.params
    tensor([3., 3.])
    """
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"Invalid steps: {steps}")
    if isinstance(init, dict):
        params = {k: v.detach().clone().requires_grad_() for k, v in init.items()}
        leaves = list(params.values())
    else:
        params = init.detach().clone().requires_grad_()
        leaves = [params]
    opt = optimizer(leaves, **options)

    def closure():
        opt.zero_grad()
        value = loss(params)
        value.backward()
        return value.detach()

    losses, diverged = [], False
    for _ in range(steps):
        value = opt.step(closure)
        losses.append(float(value))
        if not math.isfinite(losses[-1]):
            diverged = True
            break
    final = {k: v.detach() for k, v in params.items()} if isinstance(params, dict) else params.detach()
    return MinimizeResult(final, torch.tensor(losses, dtype=torch.float64), diverged)
