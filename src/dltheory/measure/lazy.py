"""Lazy training: how far the weights move, and the neural tangent kernel.

In the NTK regime (Jacot, Gabriel, Hongler 2018; Du, Zhai, Poczos, Singh 2019) the weights
of a wide network barely move from their initialization and the empirical NTK Gram matrix
stays close to its infinite-width limit, whose smallest eigenvalue controls the linear
convergence rate of gradient descent. These functions measure both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch.func import jacrev, vmap

from dltheory.errors import ShapeError, UserError
from dltheory.measure._pytree import Params, _Layout


@dataclass(frozen=True)
class Distance:
    """``‖θ − θ₀‖₂`` in total (``total``, and ``relative`` = total / ‖θ₀‖₂) and per
    parameter tensor (``per_layer``, ``per_layer_relative``; keys as in ``params``)."""

    total: float
    relative: float
    per_layer: dict
    per_layer_relative: dict


def distance_from_init(params: Params, init: Params) -> Distance:
    """The Euclidean distance of the weights from their initialization.

    Parameters
    ----------
    params, init : Tensor or dict[str, Tensor]
        Current and initial weights, with the same structure. A relative distance whose
        denominator is 0 is reported as ``inf`` (or 0 when the weights have not moved).

    References
    ----------
    S. S. Du, X. Zhai, B. Poczos, A. Singh, "Gradient descent provably optimizes
    over-parameterized neural networks", ICLR 2019 (Lemma 3.3: ‖w_r(t) − w_r(0)‖ = O(1/√m)).

    Examples
    --------
    >>> import torch
    >>> d = distance_from_init({"w": torch.tensor([3.0, 4.0])}, {"w": torch.tensor([0.0, 8.0])})
    >>> d.total, d.relative
    (5.0, 0.625)
    """
    layout = _Layout(params)
    if _Layout(init).names != layout.names:
        raise ShapeError("params and init must have the same keys")
    per, rel = {}, {}
    names = layout.names or ["params"]
    for name, p, p0 in zip(names, layout.leaves(params), layout.leaves(init)):
        if p.shape != p0.shape:
            raise ShapeError(f"{name}: shape {tuple(p.shape)} differs from init {tuple(p0.shape)}")
        per[name] = float((p - p0).norm())
        rel[name] = _ratio(per[name], float(p0.norm()))
    total = math.sqrt(sum(v * v for v in per.values()))
    return Distance(total, _ratio(total, float(layout.flatten(init).norm())), per, rel)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else (0.0 if a == 0 else math.inf)


def max_neuron_movement(weight: torch.Tensor, init: torch.Tensor) -> float:
    """``max_r ‖w_r − w_r(0)‖₂`` over the neurons (rows) of a weight matrix (out, in), the
    quantity Du et al. (2019, Lemma 3.3 / Theorem 3.2) bound by ``O(√n / (√m λ₀ ...))``.

    Examples
    --------
    >>> import torch
    >>> max_neuron_movement(torch.tensor([[1.0, 1.0], [0.0, 3.0]]), torch.zeros(2, 2))
    3.0
    """
    if weight.shape != init.shape or weight.dim() != 2:
        raise ShapeError("weight and init must be matrices of one shape (neurons, inputs)")
    return float((weight - init).norm(dim=1).max())


def empirical_ntk(f: Callable[[Params, torch.Tensor], torch.Tensor], params: Params,
                  x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
    """The empirical neural tangent kernel ``Θ(x, x') = ⟨∂f(θ, x)/∂θ, ∂f(θ, x')/∂θ⟩``.

    Per-example Jacobians by ``vmap(jacrev)``; memory is ``N P`` (times the outputs), so
    for large ``N P`` pass slices of the data.

    Parameters
    ----------
    f : callable
        ``f(params, x) -> outputs`` for a batch ``x``: shape (N,) or (N, C). For a module:
        ``lambda p, x: torch.func.functional_call(model, p, (x,))``.
    params : Tensor or dict[str, Tensor]
        The weights at which the kernel is taken.
    x1, x2 : Tensor
        Inputs (batch first); ``x2`` defaults to ``x1`` (the Gram matrix).

    Returns
    -------
    Tensor
        (N1, N2) for scalar outputs; (N1, N2, C, C) for C outputs.

    References
    ----------
    A. Jacot, F. Gabriel, C. Hongler, "Neural tangent kernel: convergence and
    generalization in neural networks", NeurIPS 2018.

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[1.0, 0.0], [1.0, 2.0]])
    >>> empirical_ntk(lambda w, x: x @ w, torch.zeros(2), x)   # a linear model: X Xᵀ
    tensor([[1., 1.],
            [1., 5.]])
    """
    layout = _Layout(params)
    detached = layout.build([p.detach() for p in layout.leaves(params)])

    def jacobian(x: torch.Tensor) -> torch.Tensor:
        single = lambda p, xi: f(p, xi.unsqueeze(0))[0]
        jac = vmap(jacrev(single), in_dims=(None, 0))(detached, x)
        leaves = layout.leaves(jac)
        lead = leaves[0].dim() - len(layout.shapes[0])
        return torch.cat([j.reshape(*j.shape[:lead], -1) for j in leaves], dim=-1)

    J1 = jacobian(x1)
    J2 = J1 if x2 is None else jacobian(x2)
    if J1.dim() == 2:
        return J1 @ J2.T
    if J1.dim() != 3:
        raise ShapeError("f must return outputs of shape (N,) or (N, C)")
    return torch.einsum("acp,bdp->abcd", J1, J2)


def relu_ntk_gram_infinite_width(X: torch.Tensor) -> torch.Tensor:
    """The Gram matrix ``H∞`` of a two-layer ReLU network at infinite width.

    For ``f(x) = (1/√m) Σ_r a_r relu(w_rᵀx)`` with ``w_r ~ N(0, I)``, ``a_r ~ ±1`` fixed and
    only the first layer trained, the NTK Gram matrix converges (m → ∞) to
    ``H∞_ij = E_w[x_iᵀx_j 1{wᵀx_i ≥ 0, wᵀx_j ≥ 0}] = x_iᵀx_j (π − arccos(x_iᵀx_j / ‖x_i‖‖x_j‖)) / (2π)``
    (Du, Zhai, Poczos, Singh 2019, eq. (3) and Section 3); its smallest eigenvalue ``λ₀``
    sets the width needed and the linear rate ``(1 − η λ₀ / 2)`` of gradient descent.

    Parameters
    ----------
    X : Tensor, shape (N, d)
        Inputs (Du et al. assume ``‖x_i‖ = 1``; the formula holds for any nonzero norms).

    References
    ----------
    S. S. Du, X. Zhai, B. Poczos, A. Singh, "Gradient descent provably optimizes
    over-parameterized neural networks", ICLR 2019.

    Examples
    --------
    >>> import torch
    >>> relu_ntk_gram_infinite_width(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    tensor([[0.5000, 0.0000],
            [0.0000, 0.5000]])
    """
    if X.dim() != 2:
        raise ShapeError(f"X must be (N, d), got shape {tuple(X.shape)}")
    norms = X.norm(dim=1)
    if not bool((norms > 0).all()):
        raise UserError("every input must be nonzero (the angle to a zero input is undefined)")
    G = X @ X.T
    cos = (G / (norms[:, None] * norms[None, :])).clamp(-1.0, 1.0)
    return G * (math.pi - torch.arccos(cos)) / (2 * math.pi)
