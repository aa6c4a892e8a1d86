"""Full-batch gradient descent."""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from dltheory.optim._common import _check_nonnegative, _evaluate


class GD(Optimizer):
    r"""Gradient descent on the full loss.

    .. math:: w_{t+1} = w_t - \eta \nabla L(w_t)

    The same update as ``torch.optim.SGD`` without momentum, named for what it is when the
    closure evaluates the full-batch loss. From a random initialization and with
    ``lr < 1/ℓ`` (ℓ the gradient's Lipschitz constant) it converges to a minimizer, never to
    a strict saddle, with probability one (Lee et al. 2016).

    Parameters
    ----------
    params : iterable of tensors or parameter groups.
    lr : step size η ≥ 0.

    References
    ----------
    Cauchy, "Méthode générale pour la résolution des systèmes d'équations simultanées", 1847.
    Lee, Simchowitz, Jordan, Recht, "Gradient descent only converges to minimizers", COLT 2016.

    Examples
    --------
    >>> w = torch.tensor([3.0], requires_grad=True)
    >>> opt = GD([w], lr=0.25)
    >>> (w ** 2).sum().backward(); _ = opt.step()
    >>> w.detach()
    tensor([1.5000])
    """

    def __init__(self, params, lr: float):
        _check_nonnegative("learning rate", lr)
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        """One gradient step; ``closure`` (optional) re-evaluates the loss and its gradient."""
        loss = _evaluate(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"])
        return loss
