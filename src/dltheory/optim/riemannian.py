"""Riemannian gradient descent on embedded manifolds."""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from dltheory.optim._common import _check_nonnegative, _evaluate
from dltheory.optim.manifolds import make_manifold


class RiemannianGD(Optimizer):
    r"""Riemannian gradient descent with a retraction.

    .. math:: x_{t+1} = R_{x_t}\bigl(-\eta\, \operatorname{grad} f(x_t)\bigr), \qquad
              \operatorname{grad} f(x) = P_{T_x\mathcal M}\, \nabla f(x)

    for a submanifold M of Euclidean space with the induced metric, ``P`` the orthogonal
    projection onto the tangent space and ``R`` a retraction (see :mod:`.manifolds`).
    Iterates stay on the manifold up to rounding. Riemannian GD with a retraction avoids
    strict saddles from almost every initialization (Lee et al. 2019, §5).

    Parameters
    ----------
    params : iterable of tensors or parameter groups; every tensor must be on its group's
        manifold (use ``make_manifold(name).project(x)`` to put it there).
    lr : step size η ≥ 0.
    manifold : ``"sphere"``, ``"oblique"`` (unit rows), ``"stiefel"`` (orthonormal columns)
        or a :class:`~dltheory.optim.manifolds.Manifold`.

    References
    ----------
    Absil, Mahony, Sepulchre, "Optimization Algorithms on Matrix Manifolds", 2008, §4.2.
    Lee, Panageas, Piliouras, Simchowitz, Jordan, Recht, "First-order methods almost always
    avoid strict saddle points", Math. Programming 2019.
    """

    def __init__(self, params, lr: float, manifold="sphere"):
        _check_nonnegative("learning rate", lr)
        super().__init__(params, dict(lr=lr, manifold=make_manifold(manifold)))
        for group in self.param_groups:
            for x in group["params"]:
                # rounding-level tolerance: a start that is off the manifold is a user error
                residual = group["manifold"].residual(x.detach())
                if not residual <= 1e3 * torch.finfo(x.dtype).eps:
                    raise ValueError(f"Invalid initial parameter: not on the {group['manifold'].name} "
                                     f"manifold (residual {residual:.3g}); project it first")

    @torch.no_grad()
    def step(self, closure=None):
        """One Riemannian gradient step; ``closure`` (optional) re-evaluates loss and gradient."""
        loss = _evaluate(closure)
        for group in self.param_groups:
            manifold = group["manifold"]
            for x in group["params"]:
                if x.grad is not None:
                    riemannian_grad = manifold.tangent(x, x.grad)
                    x.copy_(manifold.retract(x, -group["lr"] * riemannian_grad))
        return loss
