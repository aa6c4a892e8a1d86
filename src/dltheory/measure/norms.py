"""Norms and ranks that implicit-bias and capacity results are stated in.

Nuclear and Schatten-p norms of weight matrices (matrix factorization's implicit bias),
effective and stable rank, ℓp norms of a convolution filter's DFT (linear convolutional
networks' implicit bias), and Bregman divergences (mirror descent's geometry).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from dltheory.errors import ShapeError, UserError


def _singular_values(W: torch.Tensor) -> torch.Tensor:
    if not isinstance(W, torch.Tensor) or W.dim() < 2:
        raise ShapeError("expected a matrix (or a batch of matrices, shape (..., m, n))")
    if not torch.isfinite(W).all():
        raise ShapeError("the matrix contains NaN or inf")
    return torch.linalg.svdvals(W)


def schatten_norm(W: torch.Tensor, p: float) -> torch.Tensor:
    """The Schatten-p (quasi-)norm ``(Σ_i σ_i^p)^{1/p}`` of a matrix.

    ``p = 1`` is the nuclear norm, ``p = 2`` the Frobenius norm, ``p = inf`` the spectral
    norm; ``0 < p < 1`` gives the quasi-norms that deep matrix factorization is conjectured
    to minimize (Arora, Cohen, Hu, Luo 2019).

    Parameters
    ----------
    W : Tensor, shape (..., m, n)
    p : float, positive or ``math.inf``

    References
    ----------
    S. Arora, N. Cohen, W. Hu, Y. Luo, "Implicit regularization in deep matrix
    factorization", NeurIPS 2019.

    Examples
    --------
    >>> import torch
    >>> schatten_norm(torch.diag(torch.tensor([3.0, 4.0])), 2)
    tensor(5.)
    >>> schatten_norm(torch.diag(torch.tensor([1.0, 4.0])), 0.5)
    tensor(9.)
    """
    if not (p > 0):
        raise UserError(f"Schatten p must be positive (or math.inf), got {p!r}")
    s = _singular_values(W)
    if math.isinf(p):
        return s.amax(-1)
    return s.pow(p).sum(-1).pow(1 / p)


def nuclear_norm(W: torch.Tensor) -> torch.Tensor:
    """The nuclear norm ``Σ_i σ_i`` (Schatten-1), the implicit bias of gradient flow on
    shallow matrix factorization from small init (Gunasekar et al. 2017, conjecture).

    References
    ----------
    S. Gunasekar, B. Woodworth, S. Bhojanapalli, B. Neyshabur, N. Srebro, "Implicit
    regularization in matrix factorization", NeurIPS 2017.

    Examples
    --------
    >>> import torch
    >>> nuclear_norm(torch.tensor([[3.0, 0.0], [0.0, -4.0]]))
    tensor(7.)
    """
    return schatten_norm(W, 1)


def effective_rank(W: torch.Tensor) -> torch.Tensor:
    """The effective rank ``exp(H(p))``, ``p_i = σ_i / Σ_j σ_j`` (Roy & Vetterli 2007):
    ``k`` for ``k`` equal singular values, continuous in between; 0 for the zero matrix.

    References
    ----------
    O. Roy, M. Vetterli, "The effective rank: a measure of effective dimensionality",
    EUSIPCO 2007.

    Examples
    --------
    >>> import torch
    >>> effective_rank(torch.eye(3))
    tensor(3.)
    """
    s = _singular_values(W)
    total = s.sum(-1, keepdim=True)
    prob = s / total.clamp_min(torch.finfo(s.dtype).tiny)
    entropy = -torch.special.xlogy(prob, prob).sum(-1)
    return torch.where(total.squeeze(-1) > 0, entropy.exp(), torch.zeros_like(entropy))


def stable_rank(W: torch.Tensor) -> torch.Tensor:
    """The stable rank ``‖W‖_F² / ‖W‖_2²`` (at most the rank), which enters the
    spectrally-normalized margin bounds.

    Examples
    --------
    >>> import torch
    >>> stable_rank(torch.diag(torch.tensor([2.0, 1.0])))
    tensor(1.2500)
    """
    s = _singular_values(W)
    return s.square().sum(-1) / s.amax(-1).square()


def fourier_norm(w: torch.Tensor, p: float, *, dims: int = 1) -> torch.Tensor:
    """The ℓp (quasi-)norm of the discrete Fourier transform of a filter.

    Gradient descent on an ``L``-layer linear convolutional network with full-width
    circular filters converges in direction to a stationary point of
    ``min ‖ŵ‖_{2/L} s.t. y_n ⟨w, x_n⟩ ≥ 1`` with ``ŵ`` the DFT of the end-to-end filter
    (Gunasekar, Lee, Soudry, Srebro 2018, Theorem 2). The DFT is unnormalized,
    ``ŵ_k = Σ_j w_j e^{-2πi jk/n}`` (torch's default), so ``‖ŵ‖_2 = √n ‖w‖_2``.

    Parameters
    ----------
    w : Tensor
        The filter; its last ``dims`` dimensions are transformed (the rest are batch).
    p : float
        Positive, or ``math.inf``; ``p < 1`` gives the quasi-norms of deep networks.
    dims : int
        1 for 1-D filters, 2 for 2-D filters, ...

    References
    ----------
    S. Gunasekar, J. D. Lee, D. Soudry, N. Srebro, "Implicit bias of gradient descent on
    linear convolutional networks", NeurIPS 2018.

    Examples
    --------
    >>> import torch
    >>> fourier_norm(torch.tensor([1.0, 0.0, 0.0, 0.0]), 1)   # a delta: |ŵ_k| = 1 for all k
    tensor(4.)
    """
    if not (p > 0):
        raise UserError(f"p must be positive (or math.inf), got {p!r}")
    if not isinstance(dims, int) or not 1 <= dims <= w.dim():
        raise ShapeError(f"dims must be an integer in [1, {w.dim()}], got {dims!r}")
    axes = tuple(range(-dims, 0))
    magnitude = torch.fft.fftn(w, dim=axes).abs().flatten(start_dim=w.dim() - dims)
    if math.isinf(p):
        return magnitude.amax(-1)
    return magnitude.pow(p).sum(-1).pow(1 / p)


def bregman_divergence(potential: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                       y: torch.Tensor) -> torch.Tensor:
    """``D_ψ(x, y) = ψ(x) − ψ(y) − ⟨∇ψ(y), x − y⟩`` for a differentiable convex potential ψ.

    Mirror descent with potential ψ converges, on under-determined least squares, to the
    interpolant of least ``D_ψ(·, w₀)`` (Gunasekar, Lee, Soudry, Srebro 2018a, Theorem 1).
    ``∇ψ`` is taken by autograd; the result is differentiable in ``x`` and ``y``.

    Parameters
    ----------
    potential : callable
        ``ψ(x) -> scalar tensor``.
    x, y : Tensor
        Points of the same shape.

    References
    ----------
    L. M. Bregman, "The relaxation method of finding the common point of convex sets",
    USSR Comput. Math. Math. Phys. 1967.
    S. Gunasekar, J. D. Lee, D. Soudry, N. Srebro, "Characterizing implicit bias in terms
    of optimization geometry", ICML 2018.

    Examples
    --------
    >>> import torch
    >>> half_sq = lambda v: 0.5 * v.square().sum()
    >>> bregman_divergence(half_sq, torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0]))
    tensor(12.5000)
    """
    if x.shape != y.shape:
        raise ShapeError(f"x and y must have one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    with torch.enable_grad():
        y_var = y if y.requires_grad else y.detach().requires_grad_()
        psi_y = potential(y_var)
        grad_y = torch.autograd.grad(psi_y, y_var, create_graph=y.requires_grad)[0]
    if not y.requires_grad:
        psi_y = psi_y.detach()
    return potential(x) - psi_y - (grad_y * (x - y)).sum()
