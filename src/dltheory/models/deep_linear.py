"""Deep linear networks ``x ↦ W_N ⋯ W_1 x`` and the end-to-end dynamics they induce.

A deep linear network adds nothing to the expressiveness of the linear model
``W_e = W_N ⋯ W_1`` (its *end-to-end matrix*) but changes how gradient descent moves it:
with balanced layers (``W_{j+1}ᵀW_{j+1} = W_j W_jᵀ``) the end-to-end matrix follows a
preconditioned gradient step (Arora, Cohen, Hazan 2018, Theorem 1) that no regularizer
can produce (their Theorem 3).

Every product of this module is a broadcast multiply and a sum over the contiguous last
axis, not a batched GEMM: BLAS may pick another kernel for another batch size, and a
seed's numbers must not depend on its batch-mates (the claim contract, see
:class:`dltheory.claims.base.Claim`). At the sizes of the theory (widths ≲ 100) this costs
little.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from dltheory.errors import ConfigError, ShapeError
from dltheory.models._batched import SeedBatched, broadcast_matmul, check_positive_int

INITS = ("balanced", "gaussian")


def matmul(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``A @ B`` over broadcast leading axes, each product independent of the others.

    Bit for bit, slice ``k`` of the result equals ``matmul(A[k], B[k])`` whatever the
    batch size (a batched GEMM does not promise this on CPU): :func:`broadcast_matmul`,
    which at these widths (≲ 100) is cheaper than :func:`seed_matmul`'s copies.
    """
    return broadcast_matmul(A, B)


def psd_power(A: torch.Tensor, power: float) -> torch.Tensor:
    """``A^power`` for symmetric positive semi-definite ``A`` (shape (..., n, n)), ``power ≥ 0``.

    By the eigendecomposition ``A = Q Λ Qᵀ``, one matrix at a time (a batched ``eigh`` is
    not batch-invariant either). Eigenvalues below ``n·ε·λ_max`` are round-off of a zero
    eigenvalue and set to 0: a fractional power would blow them up (``(1e-16)^{1/3} ≈ 5e-6``).
    ``A^0`` is the identity, also on the null space (the convention of Theorem 1's
    ``(W_e W_eᵀ)^0``).
    """
    if power < 0:
        raise ConfigError(f"psd_power needs power >= 0, got {power}")
    n = A.shape[-1]
    if power == 0:
        return torch.eye(n, dtype=A.dtype, device=A.device).expand(A.shape).clone()
    flat = A.reshape(-1, n, n)
    out = []
    for M in flat:
        lam, Q = torch.linalg.eigh(M)
        floor = n * torch.finfo(A.dtype).eps * lam.abs().max()
        lam = torch.where(lam > floor, lam, torch.zeros_like(lam))
        out.append(matmul(Q * lam ** power, Q.mT))
    return torch.stack(out).reshape(A.shape)


def preconditioned_gradient(W_e: torch.Tensor, grad: torch.Tensor, depth: int) -> torch.Tensor:
    r"""The end-to-end update direction of a balanced depth-N linear network.

    .. math:: P_{W_e}(\nabla) = \sum_{j=1}^{N} (W_e W_e^\top)^{\frac{j-1}{N}}\, \nabla\,
              (W_e^\top W_e)^{\frac{N-j}{N}}

    Gradient flow on the layers of a balanced network moves ``W_e`` by ``−η P_{W_e}(∇L)``;
    one step of gradient descent does so up to O(η²). Depth 1 gives ``∇`` itself.

    Parameters
    ----------
    W_e : end-to-end matrices, shape (..., d_out, d_in).
    grad : ∇L(W_e), same shape.
    depth : N ≥ 1.

    References
    ----------
    S. Arora, N. Cohen, E. Hazan, "On the Optimization of Deep Networks: Implicit
    Acceleration by Overparameterization", ICML 2018, Theorem 1; for a single
    output, Theorem 2: ``‖w‖^{2−2/N} (∇ + (N−1) Pr_w ∇)``.

    Examples
    --------
    >>> W = torch.eye(2, dtype=torch.float64) * 4
    >>> preconditioned_gradient(W, torch.ones(2, 2, dtype=torch.float64), 2)
    tensor([[8., 8.],
            [8., 8.]], dtype=torch.float64)
    """
    check_positive_int("depth", depth)
    if W_e.shape != grad.shape or W_e.dim() < 2:
        raise ShapeError(f"W_e and grad must be matrices of one shape, got {tuple(W_e.shape)} "
                         f"and {tuple(grad.shape)}")
    left, right = matmul(W_e, W_e.mT), matmul(W_e.mT, W_e)
    total = torch.zeros_like(grad)
    for j in range(1, depth + 1):
        total = total + matmul(matmul(psd_power(left, (j - 1) / depth), grad),
                               psd_power(right, (depth - j) / depth))
    return total


class DeepLinear(SeedBatched):
    r"""A depth-N linear network ``f(x) = W_N ⋯ W_1 x``, ``S`` seeds at once.

    Parameters
    ----------
    dims : ``[d_0, d_1, ..., d_N]``: input, hidden widths and output (N ≥ 1 layers).
    generators : one ``torch.Generator`` per seed.
    init : ``"balanced"`` — the end-to-end matrix (``end_to_end``, or i.i.d. N(0, scale²)
        entries) factored as ``W_j = O_j Σ^{1/N} O_{j−1}ᵀ`` with its SVD ``U Σ Vᵀ``
        (``O_0 = V``, ``O_N = U``) and Haar-random orthonormal frames ``O_j`` in the hidden
        layers, so ``W_{j+1}ᵀW_{j+1} = W_j W_jᵀ`` exactly (up to round-off); needs every
        hidden width ≥ min(d_0, d_N). ``"gaussian"`` — every layer i.i.d. N(0, scale²),
        independently (not balanced).
    scale : the standard deviation of the Gaussian draws.
    end_to_end : the end-to-end matrix a balanced init factors, shape (d_N, d_0) (shared by
        all seeds) or (S, d_N, d_0); drawn when ``None``.

    Attributes
    ----------
    weights : ``ParameterList`` of ``W_j``, shape (S, d_j, d_{j−1}).

    References
    ----------
    S. Arora, N. Cohen, E. Hazan, "On the Optimization of Deep Networks: Implicit
    Acceleration by Overparameterization", ICML 2018 (balancedness, Theorem 1).
    S. Arora, N. Cohen, N. Golowich, W. Hu, "A Convergence Analysis of Gradient Descent for
    Deep Linear Neural Networks", ICLR 2019, Procedure 1 (balanced initialization).

    Examples
    --------
    >>> net = DeepLinear([3, 4, 4, 2], generators=[torch.Generator().manual_seed(0)])
    >>> tuple(net.end_to_end().shape), float(net.balancedness()[0]) < 1e-12
    ((1, 2, 3), True)
    """

    def __init__(self, dims: Sequence[int], *, generators: Sequence[torch.Generator],
                 init: str = "balanced", scale: float = 1.0,
                 end_to_end: torch.Tensor | None = None, dtype: torch.dtype = torch.float64,
                 device: str | torch.device = "cpu"):
        super().__init__(generators, dtype, device)
        dims = list(dims)
        if len(dims) < 2:
            raise ConfigError(f"dims must list the input, hidden and output sizes (at least "
                              f"two numbers), got {dims}")
        for k in dims:
            check_positive_int("every entry of dims", k)
        if init not in INITS:
            raise ConfigError(f"unknown init {init!r}; choose one of: {', '.join(INITS)}")
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ConfigError(f"scale must be a positive number, got {scale!r}")
        if end_to_end is not None and init != "balanced":
            raise ConfigError("end_to_end is factored by the balanced init; pass init='balanced'")
        self.dims, self.depth, self.d = dims, len(dims) - 1, dims[0]
        if init == "balanced":
            layers = self._balanced(float(scale), end_to_end)
        else:
            layers = self._draw(*zip(dims[1:], dims[:-1]))
            layers = [float(scale) * W for W in layers]
        self.weights = nn.ParameterList(layers)

    def _balanced(self, scale: float, end_to_end: torch.Tensor | None) -> list[torch.Tensor]:
        d_in, d_out, N = self.dims[0], self.dims[-1], self.depth
        rank = min(d_in, d_out)
        if min(self.dims[1:-1], default=rank) < rank:
            raise ConfigError(f"a balanced init needs every hidden width >= min(d_in, d_out) "
                              f"= {rank}, got dims {self.dims}")
        if end_to_end is not None:
            end_to_end = self._check_end_to_end(end_to_end)
        per_seed = []
        for k, g in enumerate(self.generators):
            if end_to_end is None:
                W_e = scale * torch.randn(d_out, d_in, generator=g, dtype=self.dtype,
                                          device=self.device)
            else:
                W_e = end_to_end[k]
            U, sigma, Vh = torch.linalg.svd(W_e, full_matrices=False)
            root = sigma ** (1.0 / N)
            frames = [Vh.mT] + [_haar_frame(w, rank, g, self.dtype, self.device)
                                for w in self.dims[1:-1]] + [U]
            per_seed.append([matmul(frames[j + 1] * root, frames[j].mT) for j in range(N)])
        return [torch.stack(ws) for ws in zip(*per_seed)]

    def _check_end_to_end(self, W_e: torch.Tensor) -> torch.Tensor:
        shape = (self.dims[-1], self.dims[0])
        if not isinstance(W_e, torch.Tensor) or tuple(W_e.shape[-2:]) != shape or \
                W_e.dim() not in (2, 3) or (W_e.dim() == 3 and W_e.shape[0] != self.n_seeds):
            got = tuple(W_e.shape) if isinstance(W_e, torch.Tensor) else type(W_e).__name__
            raise ShapeError(f"end_to_end must have shape {shape} or ({self.n_seeds}, "
                             f"{shape[0]}, {shape[1]}), got {got}")
        if not torch.isfinite(W_e).all():
            raise ShapeError("end_to_end contains NaN or inf")
        W_e = W_e.to(device=self.device, dtype=self.dtype)
        return W_e.expand(self.n_seeds, *shape) if W_e.dim() == 2 else W_e

    def end_to_end(self) -> torch.Tensor:
        """``W_e = W_N ⋯ W_1``, shape (S, d_N, d_0)."""
        W_e = self.weights[0]
        for W in self.weights[1:]:
            W_e = matmul(W, W_e)
        return W_e

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs of shape (S, n, d_N) for ``x`` of shape (n, d_0) or (S, n, d_0)."""
        h = self.batch_input(x)
        for W in self.weights:
            h = matmul(h, W.mT)
        return h

    def layer_gradients(self, grad_end_to_end: torch.Tensor) -> list[torch.Tensor]:
        """``∂L/∂W_j = (W_N⋯W_{j+1})ᵀ ∇L(W_e) (W_{j−1}⋯W_1)ᵀ`` for every layer, given ``∇L(W_e)``.

        The chain rule of a loss that depends on the network only through ``W_e`` (Arora et
        al. 2018, proof of Theorem 1), in closed form: the same numbers autograd gives, at
        a fraction of its cost, and batch-invariant.
        """
        shape = (self.n_seeds, self.dims[-1], self.dims[0])
        if tuple(grad_end_to_end.shape) != shape:
            raise ShapeError(f"grad_end_to_end must have shape {shape}, got "
                             f"{tuple(grad_end_to_end.shape)}")
        Ws = list(self.weights)
        below = [None]  # W_{j−1}⋯W_1 for j = 1..N (None: the identity, skipped)
        for W in Ws[:-1]:
            below.append(W if below[-1] is None else matmul(W, below[-1]))
        above = [None]  # W_N⋯W_{j+1} for j = N..1
        for W in reversed(Ws[1:]):
            above.append(W if above[-1] is None else matmul(above[-1], W))
        above.reverse()
        grads = []
        for a, b in zip(above, below):
            g = grad_end_to_end if a is None else matmul(a.mT, grad_end_to_end)
            grads.append(g if b is None else matmul(g, b.mT))
        return grads

    def balancedness(self) -> torch.Tensor:
        """``max_j ‖W_{j+1}ᵀW_{j+1} − W_j W_jᵀ‖_F`` per seed, shape (S,); 0 when balanced.

        A measurement: computed without autograd.
        """
        Ws = [W.detach() for W in self.weights]
        if len(Ws) == 1:
            return torch.zeros(self.n_seeds, dtype=self.dtype, device=self.device)
        gaps = [torch.linalg.matrix_norm(matmul(B.mT, B) - matmul(A, A.mT))
                for A, B in zip(Ws[:-1], Ws[1:])]
        return torch.stack(gaps).amax(0)


def _haar_frame(n: int, k: int, generator: torch.Generator, dtype, device) -> torch.Tensor:
    """``n × k`` orthonormal columns, uniformly (Haar) distributed: QR of a Gaussian matrix
    with the signs of R's diagonal moved into Q (Mezzadri 2007)."""
    Q, R = torch.linalg.qr(torch.randn(n, k, generator=generator, dtype=dtype,
                                         device=generator.device).to(device))
    return Q * torch.sign(torch.diagonal(R))
