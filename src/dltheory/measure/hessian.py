"""Curvature of ``loss(params)``: Hessian-vector products, trace, extreme eigenvalues, density.

Every function takes the functional form of DESIGN.md (``loss(params) -> scalar``,
``params`` a tensor or a ``dict[str, Tensor]``; :func:`~dltheory.measure.model_loss` builds
it from an ``nn.Module``) and never mutates ``params``.

How the products are computed, and why. :class:`HessianOperator` differentiates the loss
once with ``create_graph=True`` and then takes every product ``Hv`` as a second backward
pass through that one gradient graph. On a 2-core CPU this loop was the fastest engine
measured (anchors/curvature.md: ≈1.5 gradients per product; ``vmap`` over 100 probes was
1.4-2x slower, chunks of 10 only tied), so the estimators use it on the CPU. On a GPU
they use ``vmap`` of forward-over-reverse products in chunks sized to the free memory.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch.func import grad, jvp, vmap

from dltheory.errors import ShapeError, UserError
from dltheory.measure._diagonal import _closed_form_supported, _sequential_hessian_diagonal
from dltheory.measure._pytree import Params, _flat_loss, _Layout

Loss = Callable[[Params], torch.Tensor]

# The confidence interval behind ``rtol`` is mean ± 1.96 stderr (95%, normal approximation);
# it is not trusted before this many probes, because a standard deviation estimated from a
# handful of samples is itself too noisy (a defect of PyHessian's default stopping rule).
_Z95 = 1.959963984540054
_MIN_PROBES_FOR_RTOL = 20
# Hutch++'s sketch is stored as (probes/3, P) numbers; above this many, auto stays with Hutchinson.
_SKETCH_ELEMENTS = 2**27


@dataclass(frozen=True)
class Estimate:
    """An estimated scalar with its standard error.

    ``value`` is a 0-d tensor (attached to the autograd graph when it was asked to be
    differentiable); ``stderr`` is 0.0 for exact methods; ``probes`` counts the
    Hessian-vector products spent; ``float(estimate)`` gives the value.
    """

    value: torch.Tensor
    stderr: float
    probes: int
    method: str

    def __float__(self) -> float:
        return float(self.value)

    def __repr__(self) -> str:
        return (f"Estimate({float(self.value.detach()):.6g} ± {self.stderr:.2g}, method={self.method!r}, "
                f"probes={self.probes})")


@dataclass(frozen=True)
class SpectralDensity:
    """A smoothed spectral density: ``density[i]`` at eigenvalue ``grid[i]`` (integrates to ≈1),
    from the Gauss quadrature ``nodes`` and ``weights`` of each Lanczos run (shape (runs, m))."""

    grid: torch.Tensor
    density: torch.Tensor
    nodes: torch.Tensor
    weights: torch.Tensor


class HessianOperator:
    """The Hessian of ``loss`` at ``params`` as a linear operator on flat vectors of ``R^P``.

    The gradient graph is built once (``create_graph=True``); each :meth:`matvec` is one
    more backward pass through it (Pearlmutter 1994's product by reverse-over-reverse).

    Parameters
    ----------
    loss : callable
        ``loss(params) -> scalar tensor``.
    params : Tensor or dict[str, Tensor]
        The point; flat vectors follow the order of its leaves (``dict`` order).
    create_graph : bool
        Keep the products differentiable w.r.t. ``params`` (which must then require grad);
        otherwise ``params`` are detached and nothing reaches the caller's graph.

    References
    ----------
    B. A. Pearlmutter, "Fast exact multiplication by the Hessian", Neural Computation 1994.

    Examples
    --------
    >>> import torch
    >>> A = torch.tensor([[2.0, 1.0], [1.0, 3.0]])
    >>> H = HessianOperator(lambda w: 0.5 * w @ A @ w, torch.zeros(2))
    >>> H.matvec(torch.tensor([1.0, 0.0]))
    tensor([2., 1.])
    """

    def __init__(self, loss: Loss, params: Params, *, create_graph: bool = False):
        self.layout = _Layout(params)
        leaves = self.layout.leaves(params)
        if create_graph:
            if not all(leaf.requires_grad for leaf in leaves):
                raise UserError("create_graph=True needs params that require grad "
                                "(e.g. dict(model.named_parameters()))")
            self._leaves = leaves
        else:
            self._leaves = [leaf.detach().requires_grad_() for leaf in leaves]
        self.create_graph = create_graph
        with torch.enable_grad():
            value = loss(self.layout.build(self._leaves))
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                raise ShapeError("loss(params) must return a scalar tensor")
            grads = torch.autograd.grad(value.reshape(()), self._leaves, create_graph=True,
                                        allow_unused=True)
        # A leaf the loss is linear in (or ignores) has a constant gradient: its Hessian rows are 0.
        self._live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        self._grads = [grads[i] for i in self._live]

    @property
    def size(self) -> int:
        return self.layout.numel

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for a flat vector ``v`` of length ``P``."""
        parts = self.layout.split(v)
        out = [torch.zeros_like(p) for p in parts]
        if self._live:
            products = torch.autograd.grad(self._grads, self._leaves,
                                           grad_outputs=[parts[i] for i in self._live],
                                           retain_graph=True, create_graph=self.create_graph,
                                           allow_unused=True)
            out = [o if p is None else p for o, p in zip(out, products)]
        return torch.cat([o.reshape(-1) for o in out])


def hvp(loss: Loss, params: Params, v: Params) -> Params:
    """The Hessian-vector product ``∇²loss(params) v`` by forward-over-reverse.

    ``torch.func.jvp`` of ``torch.func.grad``: composes with ``vmap`` and with autograd
    (the result is differentiable w.r.t. ``params`` when they require grad).

    Parameters
    ----------
    loss : callable
        ``loss(params) -> scalar tensor``.
    params, v : Tensor or dict[str, Tensor]
        The point and the direction, with the same structure and shapes.

    Returns
    -------
    Tensor or dict[str, Tensor]
        ``H v``, shaped like ``params``.

    References
    ----------
    B. A. Pearlmutter, "Fast exact multiplication by the Hessian", Neural Computation 1994.

    Examples
    --------
    >>> import torch
    >>> loss = lambda p: (p["w"] ** 2).sum() * p["s"]
    >>> params = {"w": torch.tensor([1.0, 2.0]), "s": torch.tensor(3.0)}
    >>> hvp(loss, params, {"w": torch.tensor([1.0, 0.0]), "s": torch.tensor(0.0)})
    {'w': tensor([6., 0.]), 's': tensor(2.)}
    """
    _check_same_structure(params, v)
    return jvp(grad(loss), (params,), (v,))[1]


def batched_hvp(loss: Loss, params: Params, vectors: Params, *, chunk_size: int | None = None) -> Params:
    """``H v_b`` for a batch of directions, by ``vmap`` of :func:`hvp` in chunks.

    Parameters
    ----------
    loss : callable
        ``loss(params) -> scalar tensor``.
    params : Tensor or dict[str, Tensor]
        The point.
    vectors : Tensor or dict[str, Tensor]
        Like ``params`` with a leading batch dimension ``B`` on every leaf.
    chunk_size : int, optional
        Directions per ``vmap`` call; ``None`` sizes chunks to half the free GPU memory on
        CUDA and uses 10 on the CPU (where larger chunks were measured slower).

    Returns
    -------
    Tensor or dict[str, Tensor]
        The products, with the leading dimension ``B``.

    Examples
    --------
    >>> import torch
    >>> A = torch.tensor([[2.0, 1.0], [1.0, 3.0]])
    >>> batched_hvp(lambda w: 0.5 * w @ A @ w, torch.zeros(2), torch.eye(2))
    tensor([[2., 1.],
            [1., 3.]])
    """
    layout = _Layout(params)
    flat = layout.flatten_batch(vectors)
    return layout.build(layout.split(_vmap_products(loss, params, flat, chunk_size)))


def hessian_diagonal(loss: Loss, params: Params, *, create_graph: bool = False) -> Params:
    """The exact diagonal of the Hessian, ``∂²loss/∂θ_i²``, shaped like ``params``.

    For a :class:`~dltheory.measure.ModelLoss` of an ``nn.Sequential`` of ``Linear`` and
    ``Conv2d`` layers (zero padding, no groups), ``Flatten`` and elementwise activations
    (parameter-free modules may come first; no BatchNorm, dropout or pooling) it is
    computed in closed form by Hessian backpropagation, at the cost of a few batched
    matrix products per layer; for any other loss it takes ``P`` Hessian-vector products
    (one per coordinate), which suits only small ``P``.

    Parameters
    ----------
    loss : callable
        ``loss(params) -> scalar tensor``.
    params : Tensor or dict[str, Tensor]
        The point.
    create_graph : bool
        Return a diagonal that is differentiable w.r.t. ``params``.

    References
    ----------
    F. Dangel, S. Harmeling, P. Hennig, "Modular block-diagonal curvature approximations
    for feedforward architectures", AISTATS 2020.

    Examples
    --------
    >>> import torch
    >>> hessian_diagonal(lambda w: (w ** 3).sum(), torch.tensor([1.0, 2.0]))
    tensor([ 6., 12.])
    """
    layout = _Layout(params)
    if _closed_form_supported(loss) and isinstance(params, dict):
        point = params if create_graph else {n: p.detach() for n, p in params.items()}
        return _sequential_hessian_diagonal(loss, point)
    products = _ProbeProducts(loss, params, create_graph)
    block = products.block_size(layout)
    parts = []
    for start in range(0, layout.numel, block):
        rows = torch.arange(start, min(start + block, layout.numel), device=layout.device)
        E = torch.zeros(len(rows), layout.numel, dtype=layout.dtype, device=layout.device)
        E[torch.arange(len(rows), device=layout.device), rows] = 1.0
        parts.append(products(E)[torch.arange(len(rows), device=layout.device), rows])
    return layout.unflatten(torch.cat(parts))


def hessian_trace(loss: Loss, params: Params, *, probes: int = 100, method: str = "auto",
                  rtol: float | None = None, generator: torch.Generator | None = None,
                  create_graph: bool = False) -> Estimate:
    """The trace of the Hessian, exactly or by randomized estimation.

    Methods:

    - ``"exact"``: the sum of :func:`hessian_diagonal` (closed form for supported
      ``ModelLoss`` models, else ``P`` products).
    - ``"hutchinson"``: the mean of ``vᵀHv`` over Rademacher probes ``v`` (Hutchinson
      1989), standard error ``std/√m``.
    - ``"hutch++"``: a third of the probes sketch the top eigenspace ``Q`` of ``H``, whose
      part ``tr(QᵀHQ)`` is exact; Hutchinson on the rest (Meyer, Musco, Musco, Woodruff 2021).
    - ``"auto"``: ``exact`` in closed form when the model allows it, or when ``P ≤ probes``;
      otherwise Hutchinson, switching to Hutch++ only if the spectrum decays. The test
      costs no extra product: the first two blocks of ``probes/6`` Hutchinson probes are
      kept, and if the span of the first block's products ``HV₁`` holds more than 2/3 of the
      energy of the second block's products (an estimate of ``‖P H‖_F²/‖H‖_F²``), Hutch++'s
      variance bound beats Hutchinson's and both blocks become its sketch. At random init
      the spectrum is flat and indefinite, and Hutchinson is kept (anchors/curvature.md:
      Hutch++ had 4.0% relative std against Hutchinson's 2.9% there).

    Parameters
    ----------
    loss : callable
        ``loss(params) -> scalar tensor``.
    params : Tensor or dict[str, Tensor]
        The point; never modified.
    probes : int
        Hessian-vector products to spend (the maximum when ``rtol`` is set).
    method : {"auto", "hutchinson", "hutch++", "exact"}
    rtol : float, optional
        Stop once the 95% confidence interval's half-width ``1.96 · stderr`` is at most
        ``rtol · |estimate|`` (checked after each block of probes, never before 20 probes).
        ``None`` spends all ``probes``.
    generator : torch.Generator, optional
        Source of the probes (drawn on its device, then moved to the params'); ``None`` uses
        a fresh generator on the params' device seeded with 0, so results are reproducible.
    create_graph : bool
        Make ``value`` differentiable w.r.t. ``params`` (which must require grad), e.g. to
        train on ``loss + λ·tr ∇²loss``; uses ``exact`` or Hutchinson (never Hutch++).

    Returns
    -------
    Estimate
        ``value`` (0-d tensor), ``stderr`` (0.0 when exact), ``probes`` used, ``method``.

    References
    ----------
    M. F. Hutchinson, "A stochastic estimator of the trace of the influence matrix for
    Laplacian smoothing splines", Comm. Statist. Simulation Comput. 1989.
    R. A. Meyer, C. Musco, C. Musco, D. P. Woodruff, "Hutch++: optimal stochastic trace
    estimation", SOSA 2021.

    Examples
    --------
    >>> import torch
    >>> A = torch.diag(torch.arange(1.0, 201.0))
    >>> est = hessian_trace(lambda w: 0.5 * w @ A @ w, torch.zeros(200), probes=60,
    ...                     method="hutch++", generator=torch.Generator().manual_seed(0))
    >>> abs(float(est) - 20100.0) / 20100.0 < 0.05
    True
    >>> float(hessian_trace(lambda w: 0.5 * w @ A @ w, torch.zeros(200), method="exact"))
    20100.0
    """
    if not isinstance(probes, int) or probes < 1:
        raise UserError(f"probes must be a positive integer, got {probes!r}")
    if method not in ("auto", "hutchinson", "hutch++", "exact"):
        raise UserError(f"unknown method {method!r}; use 'auto', 'hutchinson', 'hutch++' or 'exact'")
    if rtol is not None and not 0 < rtol < 1:
        raise UserError(f"rtol must lie in (0, 1), got {rtol!r}")
    if method == "hutch++" and create_graph:
        raise UserError("create_graph=True works with method 'exact' or 'hutchinson', not 'hutch++'")
    if method == "hutch++" and probes < 3:
        raise UserError(f"hutch++ needs at least 3 probes, got {probes}")
    layout = _Layout(params)
    closed_form = _closed_form_supported(loss) and isinstance(params, dict)
    if method == "exact" or (method == "auto" and (closed_form or layout.numel <= probes)):
        diag = layout.flatten(hessian_diagonal(loss, params, create_graph=create_graph))
        return Estimate(diag.sum(), 0.0, 0 if closed_form else layout.numel, "exact")
    generator = generator if generator is not None else torch.Generator(layout.device).manual_seed(0)
    products = _ProbeProducts(loss, params, create_graph)
    if method == "hutch++":
        return _hutchpp(products, layout, probes, rtol, generator)
    sketch_ok = (method == "auto" and not create_graph and probes >= 6
                 and probes * layout.numel // 3 <= _SKETCH_ELEMENTS)
    return _hutchinson(products, layout, probes, rtol, generator, adaptive=sketch_ok)


def hessian_eigs(loss: Loss, params: Params, k: int = 5, *, which: str = "largest",
                 tol: float = 1e-4, max_iter: int | None = None,
                 generator: torch.Generator | None = None, return_vectors: bool = False):
    """Extreme eigenvalues of the Hessian by Lanczos with full reorthogonalization.

    Lanczos builds an orthonormal Krylov basis ``V`` with ``VᵀHV = T`` tridiagonal; each
    step costs one Hessian-vector product (through one reused gradient graph) and the
    basis is reorthogonalized twice against all previous vectors, so no spurious copies of
    converged eigenvalues appear. It stops when every wanted Ritz pair ``(θ, y)`` has
    residual ``‖Hy − θy‖ = β_m |s_m| ≤ tol·|θ|``; for a symmetric matrix that bounds the
    distance from ``θ`` to an eigenvalue by ``tol·|θ|`` (and the error is typically
    ``≈ (tol θ)² / gap``). Everything runs in torch, so numpy's BLAS threads never compete
    with torch's (the 3x slow-down of scipy's eigsh seen in anchors/curvature.md).

    Parameters
    ----------
    loss : callable
        ``loss(params) -> scalar tensor``.
    params : Tensor or dict[str, Tensor]
        The point; never modified.
    k : int
        Number of eigenvalues.
    which : {"largest", "smallest", "both"}
        Algebraically largest (descending), smallest (ascending), or ``⌈k/2⌉`` largest and
        ``⌊k/2⌋`` smallest (descending).
    tol : float
        Relative residual at which a Ritz pair counts as converged.
    max_iter : int, optional
        Most products; default ``min(P, max(100, 20k))``. A warning says when it is hit.
    generator : torch.Generator, optional
        Draws the starting vector; ``None`` seeds a fresh generator with 0.
    return_vectors : bool
        Also return the Ritz vectors, shaped like ``params`` with a leading ``k``.

    Returns
    -------
    Tensor, or (Tensor, Tensor or dict[str, Tensor])
        The ``k`` eigenvalues (float64), and the eigenvectors when asked.

    References
    ----------
    C. Lanczos, "An iteration method for the solution of the eigenvalue problem of linear
    differential and integral operators", J. Res. Nat. Bur. Standards 1950.
    B. N. Parlett, "The Symmetric Eigenvalue Problem", SIAM 1998, ch. 13 (residual bounds).

    Examples
    --------
    >>> import torch
    >>> A = torch.diag(torch.tensor([5.0, 4.0, 1.0, 0.5, -2.0], dtype=torch.float64))
    >>> hessian_eigs(lambda w: 0.5 * w @ A @ w, torch.zeros(5, dtype=torch.float64), k=2).round(decimals=8)
    tensor([5., 4.], dtype=torch.float64)
    >>> hessian_eigs(lambda w: 0.5 * w @ A @ w, torch.zeros(5, dtype=torch.float64), k=1,
    ...              which="smallest").round(decimals=8)
    tensor([-2.], dtype=torch.float64)
    """
    if which not in ("largest", "smallest", "both"):
        raise UserError(f"unknown which={which!r}; use 'largest', 'smallest' or 'both'")
    op = HessianOperator(loss, params)
    P = op.size
    if not isinstance(k, int) or not 1 <= k <= P:
        raise UserError(f"k must be an integer in [1, {P}] (the number of parameters), got {k!r}")
    if not tol > 0:
        raise UserError(f"tol must be positive, got {tol!r}")
    steps = max_iter if max_iter is not None else min(P, max(100, 20 * k))
    if steps < k:
        raise UserError(f"max_iter must be at least k={k}, got {max_iter}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    start = _rademacher(generator, (P,), op.layout)

    def wanted(theta: torch.Tensor) -> torch.Tensor | None:
        if theta.numel() < k:
            return None
        order = torch.argsort(theta, descending=True)
        if which == "largest":
            return order[:k]
        if which == "smallest":
            return order.flip(0)[:k]
        return torch.cat([order[:(k + 1) // 2], order.flip(0)[:k // 2].flip(0)])

    theta, S, basis, converged = _lanczos(op.matvec, start, steps, wanted, tol)
    if not converged:
        warnings.warn(f"hessian_eigs: Lanczos stopped at max_iter={steps} before the residuals "
                      f"reached tol={tol}; raise max_iter for more accuracy", stacklevel=2)
    idx = wanted(theta)
    values = theta[idx]
    if not return_vectors:
        return values
    vectors = S[:, idx].T.to(basis.dtype) @ basis
    return values, op.layout.build(op.layout.split(vectors))


def spectral_density(loss: Loss, params: Params, *, steps: int = 90, runs: int = 1,
                     grid_size: int = 1000, sigma: float | None = None,
                     generator: torch.Generator | None = None) -> SpectralDensity:
    """The Hessian's spectral density by stochastic Lanczos quadrature.

    Each run draws a unit vector ``v`` and takes ``steps`` Lanczos steps; the eigenvalues
    ``θ_j`` of ``T`` and the squared first components ``τ_j`` of its eigenvectors are the
    Gauss quadrature of the spectral measure ``Σ_i (vᵀu_i)² δ_{λ_i}``, whose expectation is
    the eigenvalue density. Each node is smoothed by a Gaussian of width ``sigma``
    (Ghorbani, Krishnan, Xiao 2019, eq. 5-7; their default ``σ² = 10⁻⁵`` on the spectrum
    rescaled to ``[-1, 1]``, used here when ``sigma`` is None).

    Parameters
    ----------
    loss : callable
        ``loss(params) -> scalar tensor``.
    params : Tensor or dict[str, Tensor]
        The point; never modified.
    steps : int
        Lanczos steps per run (Ghorbani et al. use 90).
    runs : int
        Independent starting vectors averaged.
    grid_size : int
        Points of the returned grid, spanning the nodes with 5% margin.
    sigma : float, optional
        Gaussian width in eigenvalue units.
    generator : torch.Generator, optional
        Draws the starting vectors; ``None`` seeds a fresh generator with 0.

    Returns
    -------
    SpectralDensity
        ``grid``, ``density``, and the quadrature ``nodes`` and ``weights`` (runs, steps).

    References
    ----------
    B. Ghorbani, S. Krishnan, Y. Xiao, "An investigation into neural net optimization via
    Hessian eigenvalue density", ICML 2019.
    L. Lin, Y. Saad, C. Yang, "Approximating spectral densities of large matrices", SIAM
    Review 2016.

    Examples
    --------
    >>> import torch
    >>> A = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    >>> sd = spectral_density(lambda w: 0.5 * w @ A @ w, torch.zeros(3, dtype=torch.float64))
    >>> sd.nodes.sort().values.round(decimals=8)
    tensor([[1., 2., 3.]], dtype=torch.float64)
    """
    if not isinstance(steps, int) or steps < 1 or not isinstance(runs, int) or runs < 1:
        raise UserError(f"steps and runs must be positive integers, got {steps!r} and {runs!r}")
    if not isinstance(grid_size, int) or grid_size < 2:
        raise UserError(f"grid_size must be an integer ≥ 2, got {grid_size!r}")
    op = HessianOperator(loss, params)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    all_nodes, all_weights = [], []
    for _ in range(runs):
        start = _rademacher(generator, (op.size,), op.layout)
        m = min(steps, op.size)
        theta, S, _, _ = _lanczos(op.matvec, start, m, None, 0.0)
        # A run that meets an invariant subspace early is padded with zero-weight nodes.
        nodes = torch.full((m,), float(theta[-1]), dtype=torch.float64)
        weights = torch.zeros(m, dtype=torch.float64)
        nodes[:theta.numel()] = theta
        weights[:theta.numel()] = S[0].square()
        all_nodes.append(nodes)
        all_weights.append(weights)
    nodes, weights = torch.stack(all_nodes), torch.stack(all_weights)
    lo, hi = float(nodes.min()), float(nodes.max())
    span = max(hi - lo, 1e-12 * max(abs(lo), abs(hi), 1.0))
    if sigma is None:
        sigma = math.sqrt(1e-5) * span / 2
    if not sigma > 0:
        raise UserError(f"sigma must be positive, got {sigma!r}")
    grid = torch.linspace(lo - 0.05 * span, hi + 0.05 * span, grid_size, dtype=torch.float64)
    kernel = torch.exp(-0.5 * ((grid[:, None] - nodes.reshape(-1)[None, :]) / sigma) ** 2)
    density = kernel @ weights.reshape(-1) / (runs * sigma * math.sqrt(2 * math.pi))
    return SpectralDensity(grid, density, nodes, weights)


def _lanczos(matvec, start: torch.Tensor, steps: int, wanted, tol: float):
    """Lanczos with full (twice-applied) reorthogonalization.

    Returns the Ritz values ``θ`` (float64), the eigenvectors ``S`` of ``T``, the basis
    ``V`` (m, P), and whether the wanted pairs converged. ``wanted(θ)`` gives the indices
    of the wanted Ritz values, or None while there are too few; ``wanted=None`` runs all steps.
    """
    P = start.numel()
    basis = torch.empty(steps, P, dtype=start.dtype, device=start.device)
    alphas, betas = [], []
    q = start / start.norm()
    scale = 0.0
    for j in range(steps):
        basis[j] = q
        w = matvec(q)
        alphas.append(float(q @ w))
        for _ in range(2):
            w = w - basis[:j + 1].T @ (basis[:j + 1] @ w)
        beta = float(w.norm())
        betas.append(beta)
        scale = max(scale, abs(alphas[-1]), beta)
        theta, S = _tridiagonal_eigh(alphas, betas[:-1])
        # β ≈ 0: the Krylov space is invariant, so its Ritz pairs are exact eigenpairs.
        exhausted = beta <= 1e3 * torch.finfo(start.dtype).eps * max(scale, 1e-30) or j + 1 == P
        if exhausted:
            return theta, S, basis[:j + 1], True
        idx = wanted(theta) if wanted is not None else None
        if idx is not None and bool((beta * S[-1, idx].abs() <= tol * theta[idx].abs()).all()):
            return theta, S, basis[:j + 1], True
        q = w / beta
    return theta, S, basis, wanted is None


def _tridiagonal_eigh(alphas: list[float], betas: list[float]):
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas, dtype=torch.float64)
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigh(T)


class _ProbeProducts:
    """Products ``H V`` for blocks of probes ``V`` (rows), with the engine chosen per device:
    the graph-reusing loop on the CPU (blocks of 10 bound the probes' memory), chunked
    ``vmap`` of forward-over-reverse on CUDA (a block is one chunk, sized once to memory)."""

    def __init__(self, loss: Loss, params: Params, create_graph: bool):
        self.loss, self.params = loss, params
        self.use_vmap = _Layout(params).device.type == "cuda" and not create_graph
        self.op = None if self.use_vmap else HessianOperator(loss, params, create_graph=create_graph)
        self.block = None if self.use_vmap else 10

    def __call__(self, V: torch.Tensor) -> torch.Tensor:
        if self.use_vmap:
            return _vmap_products(self.loss, self.params, V, self.block or V.shape[0])
        return torch.stack([self.op.matvec(v) for v in V])

    def block_size(self, layout: _Layout) -> int:
        if self.block is None:
            theta = layout.flatten(self.params).detach()
            f = _flat_loss(self.loss, layout)
            probe = torch.ones(layout.numel, dtype=layout.dtype, device=layout.device)
            self.block = _chunk_for_memory(lambda v: jvp(grad(f), (theta,), (v,))[1], probe)
        return self.block


def _vmap_products(loss: Loss, params: Params, V: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
    layout = _Layout(params)
    theta = layout.flatten(params).detach()
    f = _flat_loss(loss, layout)
    product = lambda v: jvp(grad(f), (theta,), (v,))[1]
    if chunk_size is None:
        chunk_size = _chunk_for_memory(product, V[0]) if V.device.type == "cuda" else 10
    return vmap(product, chunk_size=max(1, min(chunk_size, V.shape[0])))(V)


def _chunk_for_memory(product, v: torch.Tensor) -> int:
    """Directions per vmap call such that a chunk uses about half the free GPU memory,
    from the peak memory of one product (capped at 1000: beyond, nothing is gained)."""
    torch.cuda.synchronize(v.device)
    base = torch.cuda.memory_allocated(v.device)
    torch.cuda.reset_peak_memory_stats(v.device)
    product(v)
    peak = max(torch.cuda.max_memory_allocated(v.device) - base, 1)
    free, _ = torch.cuda.mem_get_info(v.device)
    return max(1, min(1000, int(0.5 * free / peak)))


def _rademacher(generator: torch.Generator, shape, layout: _Layout) -> torch.Tensor:
    signs = torch.randint(0, 2, shape, generator=generator, device=generator.device)
    return (2 * signs - 1).to(dtype=layout.dtype, device=layout.device)


def _hutchinson(products: _ProbeProducts, layout: _Layout, probes: int, rtol, generator,
                *, adaptive: bool) -> Estimate:
    block = max(1, probes // 6) if adaptive else min(probes, products.block_size(layout))
    samples: list[torch.Tensor] = []
    kept_V, kept_HV = [], []
    while len(samples) < probes:
        V = _rademacher(generator, (min(block, probes - len(samples)), layout.numel), layout)
        HV = products(V)
        samples.extend((V * HV).sum(1))
        if adaptive and len(kept_V) < 2:
            kept_V.append(V)
            kept_HV.append(HV.detach())
            if len(kept_V) == 2 and _captured_energy(kept_HV[0], kept_HV[1]) > 2 / 3:
                return _hutchpp_finish(products, layout, probes, rtol, generator,
                                       torch.cat(kept_V), torch.cat(kept_HV))
        if _tight_enough(samples, rtol):
            break
    return _mean_estimate(samples, "hutchinson")


def _captured_energy(Y1: torch.Tensor, Y2: torch.Tensor) -> float:
    """``‖Q Qᵀ Y₂‖²/‖Y₂‖²`` with ``Q = orth(Y₁ᵀ)``: for Rademacher probes, E‖A v‖² = ‖A‖_F², so
    this estimates the share of ‖H‖_F² in the span of the first sketch."""
    Q = torch.linalg.qr(Y1.T.double()).Q
    Y2 = Y2.double()
    return float((Y2 @ Q).square().sum() / Y2.square().sum().clamp_min(1e-300))


def _hutchpp(products, layout, probes, rtol, generator) -> Estimate:
    k = probes // 3
    S = _rademacher(generator, (k, layout.numel), layout)
    return _hutchpp_finish(products, layout, probes, rtol, generator, S, products(S).detach())


def _hutchpp_finish(products, layout, probes, rtol, generator, S, HS) -> Estimate:
    """Hutch++ given the sketch products ``HS`` (rows): exact trace on ``Q = orth(HS)``,
    Hutchinson on the deflated ``(I − QQᵀ) H (I − QQᵀ)`` with the remaining probes."""
    Q = torch.linalg.qr(HS.T).Q.T
    HQ = products(Q)
    top = (Q * HQ).sum()
    used = S.shape[0] + Q.shape[0]
    samples: list[torch.Tensor] = []
    while used + len(samples) < probes:
        G = _rademacher(generator, (min(products.block_size(layout), probes - used - len(samples)),
                                    layout.numel), layout)
        G = G - (G @ Q.T) @ Q
        samples.extend((G * products(G)).sum(1))
        if _tight_enough(samples, rtol, offset=float(top)):
            break
    if not samples:
        return Estimate(top, float("nan"), used, "hutch++")
    rest = _mean_estimate(samples, "hutch++")
    return Estimate(top + rest.value, rest.stderr, used + len(samples), "hutch++")


def _tight_enough(samples: list[torch.Tensor], rtol, offset: float = 0.0) -> bool:
    if rtol is None or len(samples) < _MIN_PROBES_FOR_RTOL:
        return False
    est = _mean_estimate(samples, "")
    return _Z95 * est.stderr <= rtol * abs(float(est.value) + offset)


def _mean_estimate(samples: list[torch.Tensor], method: str) -> Estimate:
    values = torch.stack(samples)
    detached = values.detach().double()
    stderr = float(detached.std() / math.sqrt(len(samples))) if len(samples) > 1 else float("nan")
    return Estimate(values.mean(), stderr, len(samples), method)


def _check_same_structure(params: Params, v: Params) -> None:
    layout = _Layout(params)
    if isinstance(params, torch.Tensor) != isinstance(v, torch.Tensor):
        raise ShapeError("v must have the structure of params (both tensors or both dicts)")
    if layout.names is not None and list(v.keys()) != layout.names:
        raise ShapeError(f"v must have the keys of params {layout.names}, got {list(v.keys())}")
    for p, d in zip(layout.leaves(params), layout.leaves(v)):
        if p.shape != d.shape:
            raise ShapeError(f"v has a leaf of shape {tuple(d.shape)} where params has {tuple(p.shape)}")
