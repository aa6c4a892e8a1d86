"""Seed-batched modules: parameters stacked along a leading seed axis.

Every model of this package holds the parameters of ``S`` independent networks, one per
``torch.Generator`` it was built from, stacked along dimension 0. Seed ``k`` draws its
parameters from ``generators[k]`` alone, in the order the unbatched network would, so the
``k``-th slice equals the parameters of the same model built from ``[generators[k]]``;
forward passes are batched matmuls over that axis. A loss summed over seeds has, in each
slice, the gradient of that seed's own loss, so one optimizer step trains all seeds.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dltheory.errors import ConfigError, ShapeError

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "square": torch.square,
    "tanh": torch.tanh,
    "softplus": nn.functional.softplus,
    "identity": lambda z: z,
}


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation called ``name`` (one of :data:`ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose one of: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def c_sigma(name: str) -> float:
    """``c_σ = 1 / E[σ(z)²]`` for ``z ~ N(0, 1)``: the factor that keeps ``‖x⁽ʰ⁾‖ ≈ 1``.

    Du, Lee, Li, Wang, Zhai 2019 (eq. 3) scale each layer by ``√(c_σ/m)``; ReLU gives
    ``c_σ = 2`` (He initialization). Computed by 200-point Gauss–Hermite quadrature, exact
    for polynomial activations and to ~1e-4 for ReLU's kink.
    """
    z, w = np.polynomial.hermite_e.hermegauss(200)
    sigma = get_activation(name)(torch.from_numpy(z)).numpy()
    return float(math.sqrt(2 * math.pi) / (w * sigma ** 2).sum())


def check_positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


# The CPU allocator's alignment, and what MKL's batched-GEMM kernels look at: on this
# project's machines (oneMKL 2024, AVX2/AVX-512) ``?gemm_batch`` picks a kernel per item by
# the item's memory alignment and layout, and splits items across threads when it has
# several; ``?gemm`` on one matrix picks yet another kernel. Measured in
# ``tests/models/test_seed_matmul.py`` and ``bench/seeds.py``.
_ALIGN = 64
# Products of at most this many multiply-adds skip the GEMM (the choice depends on the
# shape alone, never on the number of seeds).
_TINY = 1024


def broadcast_matmul(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``A @ B`` over broadcast leading axes as one broadcast multiply and a sum over the
    contiguous last axis: slice ``k`` is bit for bit ``broadcast_matmul(A[k], B[k])``
    whatever the batch size. Memory ``(..., m, n, k)``: for small factors only."""
    return (A[..., :, None, :] * B.mT[..., None, :, :]).sum(-1)


def _transposed(x: torch.Tensor) -> bool:
    """Whether ``x`` (S, r, c) holds column-major items (``x.mT`` row-major): kept so, a
    transposed factor costs no transposing copy. Decided by how the caller built ``x``,
    never by the number of seeds, so a seed alone gets the same kernel."""
    return x.stride(1) == 1 and x.stride(2) == x.shape[1] and x.shape[1] > 1


def _aligned(x: torch.Tensor, cols: int) -> torch.Tensor:
    """``x`` (S, r, c) with ``cols − c`` zero columns appended, dense, every item on an
    :data:`_ALIGN`-byte boundary: ``x`` itself when it already is so (a fresh dense tensor
    whose items fill whole 64-byte lines is), else a fresh copy (one pad where items fill
    whole lines, else an aligned buffer). Row- or column-major items stay so; any other
    layout becomes row-major."""
    S, r, c = x.shape
    q = _ALIGN // x.element_size()
    if _transposed(x):
        rows = x.mT if cols == c else F.pad(x.mT, (0, 0, 0, cols - c))
        return _aligned(rows, r).mT
    size = r * cols
    if cols > c and size % q == 0:
        return F.pad(x, (0, cols - c))  # fresh, dense, items on line boundaries
    stride = -(-size // q) * q
    if (cols == c and x.stride() == (stride, c, 1) and x.storage_offset() == 0
            and x.data_ptr() % _ALIGN == 0):
        return x
    out = torch.empty_strided((S, r, cols), (stride, cols, 1), dtype=x.dtype, device=x.device)
    if cols == c:
        return out.copy_(x)
    out.narrow(2, c, cols - c).zero_()
    out.narrow(2, 0, c).copy_(x)
    return out


def seed_matmul(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``A @ B`` over broadcast leading (seed) axes, slice ``k`` bit for bit what seed ``k``
    alone gets from the same call, whatever the batch size and the slice's place in memory.

    ``torch.bmm`` on CPU does not promise this: MKL's batched GEMM chooses its kernel by
    each matrix's alignment and layout and, with several threads, how it splits the batch,
    while a batch of one runs the unbatched GEMM. Here every product runs as one batched
    GEMM (a lone matrix is paired with itself) on one thread, over dense operands whose
    items all start on a 64-byte boundary (copied only where they do not), row- or
    column-major as the caller built them; ``B`` gets zero columns so that the output's
    items are aligned too (a zero column is another output column: it changes no other
    column's sum). Products of at most ``_TINY`` multiply-adds are a broadcast multiply and
    a sum over the contiguous last axis instead, also batch-invariant.

    Cost: 20–50 µs of copies and calls per product on top of the GEMM, which plain
    ``torch.matmul`` does not pay. Measured at 16 seeds on smoke configs (README, Scaling):
    teacher-student, which looped over seeds before, 2.3 s → 0.9 s; lazy training, its
    ResNet and the quadratic net, which used plain batched GEMMs (bit-identical only at the
    shapes their tests try), 1.4–1.5× slower; width threshold unchanged. ``_TINY`` is fixed
    by the shape alone: a cut-off that looked at the number of seeds would give a seed
    alone other bits. On other devices (no bit-identity contract there) this is
    ``torch.matmul``. Differentiable: its backward runs the two products of the gradient
    through ``seed_matmul`` too, so gradients are batch-invariant as well.

    >>> A, B = torch.randn(5, 50, 25), torch.randn(5, 25, 10)
    >>> all(torch.equal(seed_matmul(A, B)[k], seed_matmul(A[k:k + 1].clone(), B[k:k + 1])[0])
    ...     for k in range(5))
    True
    """
    if A.dim() < 2 or B.dim() < 2 or A.shape[-1] != B.shape[-2] or A.dtype != B.dtype:
        raise ShapeError(f"seed_matmul needs (..., m, k) @ (..., k, n) of one dtype, got "
                         f"{tuple(A.shape)} {A.dtype} @ {tuple(B.shape)} {B.dtype}")
    if A.device.type == "cpu" and torch.is_grad_enabled() and (A.requires_grad or B.requires_grad):
        return _SeedMatmul.apply(A, B)
    return _seed_matmul(A, B)


class _SeedMatmul(torch.autograd.Function):
    """``seed_matmul`` with a backward made of ``seed_matmul`` products (``torch.bmm``'s own
    backward is a batched GEMM whose rounding depends on the batch)."""

    @staticmethod
    def forward(A, B):
        return _seed_matmul(A, B)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        A, B = ctx.saved_tensors
        grad_A = grad_B = None
        if ctx.needs_input_grad[0]:
            grad_A = seed_matmul(grad, B.mT).sum_to_size(A.shape)
        if ctx.needs_input_grad[1]:
            grad_B = seed_matmul(A.mT, grad).sum_to_size(B.shape)
        return grad_A, grad_B


def _seed_matmul(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    if A.device.type != "cpu" or not A.dtype.is_floating_point or 0 in A.shape or 0 in B.shape:
        return torch.matmul(A, B)
    (m, k), n = A.shape[-2:], B.shape[-1]
    if m * k * n <= _TINY:  # batch-invariant too, and cheaper than the copies below
        return broadcast_matmul(A, B)
    if A.dim() == 3 and A.shape[:1] == B.shape[:1]:  # the usual call: one seed axis
        lead = A.shape[:1]
    else:
        lead = torch.broadcast_shapes(A.shape[:-2], B.shape[:-2])
        A = A.expand(*lead, m, k).reshape(-1, m, k)
        B = B.expand(*lead, k, n).reshape(-1, k, n)
    S = A.shape[0]
    # Pad n so that m·n_pad (the output's items) and k·n_pad (B's) fill whole 64-byte
    # lines: then every item is aligned as a lone matrix is, and B needs one pad at most.
    q = _ALIGN // A.element_size()
    step = math.lcm(q // math.gcd(m, q), q // math.gcd(k, q))
    A, B = _aligned(A, k), _aligned(B, -(-n // step) * step)
    if S == 1:
        A, B = A.expand(2, m, k), B.expand(2, *B.shape[1:])
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        C = torch.bmm(A, B)
    finally:
        if threads > 1:
            torch.set_num_threads(threads)
    C = C[:S] if S == 1 else C
    C = C if C.shape[2] == n else C[..., :n]
    return C if len(lead) == 1 else C.reshape(*lead, m, n)


# ATen's vectorized elementwise loops (``cpu_kernel_vec``) step two vector registers at a
# time over the coalesced tensor and send the remainder through the scalar function, whose
# rounding can differ from the vector one (float32 softplus on AVX-512: measured). A seed's
# elements then take the scalar path alone but the vector path in a batch, or the reverse.
VECTOR_BLOCK = 128  # bytes: two AVX-512 registers, the widest step of those loops


def seed_map(f: Callable[..., torch.Tensor], *xs: torch.Tensor) -> torch.Tensor:
    """``f(*xs)`` for an elementwise ``f`` of seed-stacked tensors of one shape (seeds on
    dimension 0), slice ``k`` bit for bit what seed ``k`` alone gets, whatever the batch size.

    ``f(x)`` itself does not promise this on CPU: an elementwise kernel runs the coalesced
    tensor in vector blocks and its remainder through the scalar function, and where the
    two round differently (softplus, sigmoid; gelu in float64: measured on AVX-512) a
    seed's last elements are rounded one way alone and the other way in a batch. Here each
    seed's elements are padded to a whole number of :data:`VECTOR_BLOCK` bytes (a copy,
    only where they are not already), so every element of every seed takes the vector path,
    on one thread (a multi-threaded kernel splits the tensor where its size says). On other
    devices this is ``f(*xs)``. ``f`` must be elementwise: the padding (zeros) goes through
    it and is dropped. A caller that owns its data's layout can pad once instead of per call
    (``implicit-bias-gd-l2`` pads its points to whole vector blocks before its loop).

    >>> x = torch.randn(3, 6, 24)
    >>> y = seed_map(torch.nn.functional.softplus, x)
    >>> all(torch.equal(y[k], seed_map(torch.nn.functional.softplus, x[k:k + 1])[0])
    ...     for k in range(3))
    True
    """
    x = xs[0]
    if any(t.shape != x.shape for t in xs):
        raise ShapeError(f"seed_map needs tensors of one shape, got {[tuple(t.shape) for t in xs]}")
    if x.device.type != "cpu" or x.dim() < 1 or x.numel() == 0:
        return f(*xs)
    S, N = x.shape[0], x[0].numel()
    q = VECTOR_BLOCK // x.element_size()
    flat = []
    for t in xs:
        t = t.reshape(S, N)
        if N % q:
            t = F.pad(t, (0, -N % q))
        elif not t.is_contiguous():
            t = t.contiguous()
        flat.append(t)
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        y = f(*flat)
    finally:
        if threads > 1:
            torch.set_num_threads(threads)
    return (y if y.shape[1] == N else y[:, :N]).reshape(x.shape)


class SeedBatched(nn.Module):
    """Base of the seed-batched models: input checks, per-seed draws, one seed's copy.

    Subclasses set ``self.d`` (input dimension) and build their tensors with
    :meth:`_draw`; ``forward`` maps ``x`` to outputs of shape ``(S, n)``.
    """

    def __init__(self, generators: Sequence[torch.Generator], dtype: torch.dtype,
                 device: str | torch.device):
        super().__init__()
        if isinstance(generators, torch.Generator):
            raise ConfigError("generators must be a list of torch.Generator (one per seed), "
                              "got a single generator; wrap it in a list")
        generators = list(generators)
        if not generators or not all(isinstance(g, torch.Generator) for g in generators):
            raise ConfigError("generators must be a non-empty list of torch.Generator "
                              "(one per seed)")
        self.generators = generators
        self.dtype, self.device = dtype, torch.device(device)

    @property
    def n_seeds(self) -> int:
        return len(self.generators)

    def _draw(self, *shapes: tuple[int, ...]) -> list[torch.Tensor]:
        """Standard normal tensors of ``shapes``, stacked over seeds; seed k draws from
        ``generators[k]`` in the order the shapes are given."""
        per_seed = [[torch.randn(s, generator=g, dtype=self.dtype, device=self.device)
                     for s in shapes] for g in self.generators]
        return [torch.stack(ts) for ts in zip(*per_seed)]

    def _signs(self, m: int) -> torch.Tensor:
        """Uniform ±1 of shape (S, m), one draw per seed from its own generator."""
        return torch.stack([
            torch.randint(0, 2, (m,), generator=g, device=self.device).to(self.dtype) * 2 - 1
            for g in self.generators])

    def batch_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` of shape (n, d) (shared by all seeds) or (S, n, d), checked."""
        if not isinstance(x, torch.Tensor):
            raise ShapeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() not in (2, 3) or x.shape[-1] != self.d:
            raise ShapeError(f"input must have shape (n, {self.d}) or ({self.n_seeds}, n, "
                             f"{self.d}), got {tuple(x.shape)}")
        if x.dim() == 3 and x.shape[0] != self.n_seeds:
            raise ShapeError(f"a batched input needs {self.n_seeds} seeds on dim 0, got "
                             f"{x.shape[0]}")
        if not torch.isfinite(x).all():
            raise ShapeError("input contains NaN or inf")
        return x.to(self.dtype)

    def seed(self, k: int) -> "SeedBatched":
        """A one-seed copy holding seed ``k``'s parameters (and buffers)."""
        if not -self.n_seeds <= k < self.n_seeds:
            raise ConfigError(f"seed index {k} out of range for {self.n_seeds} seeds")
        return self.seeds([k % self.n_seeds])

    def seeds(self, rows: Sequence[int]) -> "SeedBatched":
        """A copy holding the seeds ``rows``, in that order: their parameters (and buffers)
        and generators. For a batch whose seeds finish at different times (early stopping):
        the seeds left go on without the others, and, every product being batch-invariant,
        with the bits they would get alone."""
        rows = list(rows)
        if not rows or not all(isinstance(k, int) and 0 <= k < self.n_seeds for k in rows):
            raise ConfigError(f"seeds needs a non-empty list of seed indices in [0, "
                              f"{self.n_seeds}), got {rows}")
        # The generators are shared, not copied: each seed's copy keeps drawing from its own.
        copied = copy.deepcopy(self, memo={id(g): g for g in self.generators})
        for module in copied.modules():
            for name, p in module._parameters.items():
                if p is not None:
                    module._parameters[name] = nn.Parameter(p.detach()[rows].clone(),
                                                            requires_grad=p.requires_grad)
            for name, b in module._buffers.items():
                if b is not None:
                    module._buffers[name] = b[rows].clone()
        copied.generators = [self.generators[k] for k in rows]
        return copied
