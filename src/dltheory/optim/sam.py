"""Sharpness-aware minimization."""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from dltheory.optim._common import _check_nonnegative, _evaluate, _flat_grad, _require_closure


class SAM(Optimizer):
    r"""Sharpness-aware minimization with a plain gradient step as the base update.

    .. math::
        \hat\varepsilon_t = \rho\, \frac{\nabla L(w_t)}{\|\nabla L(w_t)\|_2}, \qquad
        w_{t+1} = w_t - \eta\, \nabla L(w_t + \hat\varepsilon_t)

    the first-order solution of ``min_w max_{‖ε‖₂ ≤ ρ} L(w + ε)`` (Foret et al. 2021,
    eq. 2–3). The norm is over all parameters together, as in the paper. Each step calls the
    closure twice: at ``w_t`` and at the perturbed point.

    Parameters
    ----------
    params : iterable of tensors or parameter groups.
    lr : step size η ≥ 0.
    rho : neighbourhood radius ρ ≥ 0 (ρ = 0 is :class:`GD`).

    References
    ----------
    Foret, Kleiner, Mobahi, Neyshabur, "Sharpness-aware minimization for efficiently improving
    generalization", ICLR 2021.
    """

    def __init__(self, params, lr: float, rho: float = 0.05):
        _check_nonnegative("learning rate", lr)
        _check_nonnegative("rho", rho)
        super().__init__(params, dict(lr=lr, rho=rho))

    @torch.no_grad()
    def step(self, closure=None):
        """One SAM step; returns the loss at ``w_t`` (the closure is required)."""
        _require_closure(closure, "SAM")
        loss = _evaluate(closure)
        grad_norm = torch.linalg.vector_norm(
            _flat_grad([p for group in self.param_groups for p in group["params"]])
        )
        perturbations = []
        for group in self.param_groups:
            # at a stationary point the ascent direction is undefined: no perturbation
            scale = group["rho"] / grad_norm if grad_norm > 0 else 0.0
            for p in group["params"]:
                eps = p.grad * scale if p.grad is not None else torch.zeros_like(p)
                p.add_(eps)
                perturbations.append(eps)
        _evaluate(closure)
        perturbations = iter(perturbations)
        for group in self.param_groups:
            for p in group["params"]:
                p.sub_(next(perturbations))
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"])
        return loss
