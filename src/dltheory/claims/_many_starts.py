"""Many random starts of one optimizer as one computation, and curvature at their limits.

Shared by the saddle-point and landscape claims. A run's starts are stacked along a
leading dimension and one forward/backward pass of ``vmap(loss)`` gives every start its
own gradient (the starts do not interact: the summed loss is separable). Optimizers whose
update is entrywise or row-wise (GD, mirror descent, Riemannian GD on the oblique
manifold, consensus ADMM) then take one step for all starts on the stacked tensor; those
whose update couples the whole parameter vector (coordinate descent picks one global
coordinate, perturbed GD draws from a ball in the whole vector) get one optimizer per
start, stepped in lockstep on the shared gradients.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.func import hessian, vmap

from dltheory.optim import make_manifold


def descend(loss: Callable, starts: torch.Tensor, make_optimizer: Callable, steps: int, *,
            per_start: bool = False, on_step: Callable | None = None) -> torch.Tensor:
    """Run ``steps`` optimizer steps from every row of ``starts``; returns the final rows.

    Parameters
    ----------
    loss : batched objective ``loss(X) -> (K,)`` of the stacked starts, each entry depending
        on its own row only (``vmap(problem.loss)``, for instance).
    starts : (K, ...) stacked starting points (not modified).
    make_optimizer : ``make_optimizer(params_list) -> torch.optim.Optimizer``.
    steps : number of steps.
    per_start : one optimizer per start (for updates that couple the whole vector).
    on_step : optional ``on_step(t, values)`` with the (K,) losses before step t; a
        return value of True stops the run there.
    """
    if per_start:
        leaves = [x.detach().clone().requires_grad_() for x in starts.unbind()]
        optimizers = [make_optimizer([x]) for x in leaves]
    else:
        leaves = [starts.detach().clone().requires_grad_()]
        optimizers = [make_optimizer(leaves)]

    def stacked() -> torch.Tensor:
        return torch.stack(leaves) if per_start else leaves[0]

    for t in range(steps):
        for x in leaves:
            x.grad = None
        values = loss(stacked())
        values.sum().backward()
        values = values.detach()
        if on_step is not None and on_step(t, values):
            break
        if per_start:
            for k, opt in enumerate(optimizers):
                opt.step(lambda k=k: values[k])  # noqa: B023 — called at once by step()
        else:
            optimizers[0].step(lambda: values.sum())  # noqa: B023 — called at once
    return stacked().detach()


def gradient_and_curvature(loss: Callable, points: torch.Tensor, manifold: str | None = None,
                           *per_point) -> tuple[torch.Tensor, torch.Tensor]:
    """Per point: the (Riemannian) gradient norm and λ_min of the (Riemannian) Hessian.

    ``loss(x, *args)`` is one point's objective; ``per_point`` are stacked extra arguments
    (one row per point).

    The Hessian is the dense ``torch.func.hessian`` (float64, small problems). On the
    sphere or oblique manifold (rows of unit norm) the Riemannian Hessian is
    ``P(∇²f − diag(⟨x_i, ∇_i f⟩))P`` on the tangent space (Absil, Mahony, Sepulchre 2008,
    eq. 5.15 and §5.5); the normal directions are shifted far above the spectrum so that
    ``λ_min`` is the tangent space's.

    Returns
    -------
    (grad_norms, lambda_min) : two (K,) tensors.
    """
    K = points.shape[0]
    n = points[0].numel()
    grads = vmap(torch.func.grad(loss))(points, *per_point)
    H = vmap(hessian(loss))(points, *per_point).reshape(K, n, n)
    if manifold is None:
        return grads.reshape(K, -1).norm(dim=1), torch.linalg.eigvalsh(H)[:, 0]
    rows = points.reshape(K, -1, points.shape[-1])  # a sphere is the oblique manifold of one row
    g = grads.reshape(rows.shape)
    riemannian = make_manifold("oblique").tangent(rows, g)
    radial = (rows * g).sum(-1, keepdim=True).expand_as(rows).reshape(K, n)  # ⟨x_i, ∇_i f⟩
    normals = torch.zeros(K, rows.shape[1], n, dtype=points.dtype, device=points.device)
    width = rows.shape[-1]
    for i in range(rows.shape[1]):
        normals[:, i, i * width:(i + 1) * width] = rows[:, i]
    P = torch.eye(n, dtype=points.dtype, device=points.device) - normals.mT @ normals
    shift = 1.0 + H.abs().sum((1, 2)) + radial.abs().sum(1)  # > every |eigenvalue|
    R = P @ (H - torch.diag_embed(radial)) @ P + shift[:, None, None] * (normals.mT @ normals)
    return riemannian.reshape(K, -1).norm(dim=1), torch.linalg.eigvalsh(R)[:, 0]
