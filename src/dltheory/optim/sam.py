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
    batched : the parameters stack independent models along their first axis (seed-batched
        models, :mod:`dltheory.models`; the closure returns the sum of their losses): each
        slice gets its own ``ε̂ = ρ ∇L_s/‖∇L_s‖₂``, the norm over that slice of every parameter.

    References
    ----------
    Foret, Kleiner, Mobahi, Neyshabur, "Sharpness-aware minimization for efficiently improving
    generalization", ICLR 2021.
    """

    def __init__(self, params, lr: float, rho: float = 0.05, *, batched: bool = False):
        _check_nonnegative("learning rate", lr)
        _check_nonnegative("rho", rho)
        if not isinstance(batched, bool):
            raise ValueError(f"Invalid batched: {batched!r} (True or False)")
        super().__init__(params, dict(lr=lr, rho=rho))
        self.batched = batched
        if batched:
            shapes = [tuple(p.shape) for group in self.param_groups for p in group["params"]]
            if any(not s for s in shapes) or len({s[0] for s in shapes}) > 1:
                raise ValueError(f"Invalid parameter shapes for batched=True: {shapes} (every "
                                 f"parameter needs the same leading, batch, size)")

    @torch.no_grad()
    def step(self, closure=None):
        """One SAM step; returns the loss at ``w_t`` (the closure is required)."""
        _require_closure(closure, "SAM")
        loss = _evaluate(closure)
        params = [p for group in self.param_groups for p in group["params"]]
        if self.batched:  # one norm per slice of the leading axis
            grad_norm = torch.linalg.vector_norm(torch.cat([
                (p.grad if p.grad is not None else torch.zeros_like(p)).flatten(1) for p in params
            ], 1), dim=1)
        else:
            grad_norm = torch.linalg.vector_norm(_flat_grad(params))
        perturbations = []
        for group in self.param_groups:
            # at a stationary point the ascent direction is undefined: no perturbation
            scale = torch.where(grad_norm > 0, group["rho"] / grad_norm, 0.0)
            for p in group["params"]:
                p_scale = scale.view(-1, *[1] * (p.dim() - 1)) if self.batched else scale
                eps = p.grad * p_scale if p.grad is not None else torch.zeros_like(p)
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
