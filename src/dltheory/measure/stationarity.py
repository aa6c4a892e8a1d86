"""Stationarity of non-smooth functions: the Goldstein ε-subdifferential certificate.

One (sub)gradient says nothing about stationarity at a kink (|x| has gradient ±1 right next
to its minimum). Goldstein's ε-subdifferential ∂_ε f(x) = conv{∇f(y) : y ∈ B(x, ε)} does: a
point is (ε, δ)-stationary when dist(0, ∂_ε f(x)) ≤ δ, and the stochastic subgradient method
drives this gap to 0 on tame functions (Davis, Drusvyatskiy, Kakade, Lee 2020).

References
----------
A. A. Goldstein, "Optimization of Lipschitz continuous functions", Math. Programming 13,
1977. D. Davis, D. Drusvyatskiy, S. Kakade, J. D. Lee, "Stochastic subgradient method
converges on tame functions", Foundations of Computational Mathematics 20, 2020.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.optimize import nnls
from torch.func import grad, vmap

from dltheory.errors import UserError

_PENALTY = 1e3  # weight of the simplex constraint in the NNLS (column norms scaled to ≤ 1)


def min_norm_in_hull(G) -> float:
    """dist(0, conv of the columns of ``G``), the norm of the hull's min-norm point.

    Non-negative least squares on ``[G/s; M·1ᵀ] λ ≈ [0; M]`` (the simplex constraint as a
    heavy penalty, Lawson–Hanson), λ renormalized onto the simplex: the value is the norm
    of a point of the hull, so never below the true distance, and within ~1e-6·max‖g‖ of it.

    Parameters
    ----------
    G : (D, K) array or tensor, one point per column.

    Examples
    --------
    >>> round(min_norm_in_hull(np.array([[1.0, -1.0], [1.0, 1.0]])), 6)  # segment (1,1)–(−1,1)
    1.0
    """
    G = np.asarray(G.detach().cpu() if isinstance(G, torch.Tensor) else G, dtype=np.float64)
    if G.ndim != 2 or G.shape[1] == 0 or not np.isfinite(G).all():
        raise UserError(f"min_norm_in_hull: G must be a finite (D, K) array with K >= 1, got shape {G.shape}")
    scale = float(np.linalg.norm(G, axis=0).max()) or 1.0
    E = np.vstack([G / scale, np.full((1, G.shape[1]), _PENALTY)])
    f = np.zeros(E.shape[0])
    f[-1] = _PENALTY
    lam, _ = nnls(E, f, maxiter=50 * G.shape[1])
    return float(np.linalg.norm(G @ (lam / lam.sum())))


def _check(name: str, radius: float, samples: int) -> None:
    if not radius > 0:
        raise UserError(f"{name}: radius must be > 0, got {radius}")
    if samples < 1:
        raise UserError(f"{name}: samples must be >= 1, got {samples}")


def _ball_points(x: torch.Tensor, radius: float, samples: int, generator: torch.Generator) -> torch.Tensor:
    """``samples`` points uniform in the ball B(x, radius), (samples, D), drawn from
    ``generator`` (a Gaussian direction, then the radius)."""
    D = x.numel()
    u = torch.randn(samples, D, generator=generator, dtype=x.dtype, device=x.device)
    r = radius * torch.rand(samples, 1, generator=generator, dtype=x.dtype, device=x.device) ** (1 / D)
    return x.detach() + r * u / u.norm(dim=1, keepdim=True)


def goldstein_gap(loss: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, radius: float,
                  samples: int | None = None, generator: torch.Generator | None = None) -> float:
    """dist(0, conv{∇f(y_k)}) for ``samples`` points y_k uniform in the ball B(x, radius).

    An estimate of Goldstein's gap dist(0, ∂_ε f(x)) from above (a sampled hull is inside
    the true one). The hull of K random gradients in dimension D misses 0 with high
    probability when K is close to D, even at a stationary point (Wendel: half the time at
    K = 2D for gradients spread evenly around 0), so the default K = 6D. The gradients come
    from autograd (``torch.func``); :func:`goldstein_gaps` takes a batched gradient instead.

    Parameters
    ----------
    loss : ``loss(x) -> scalar`` for a flat tensor x, differentiable by ``torch.func.grad``
        (no in-place ops on x, no ``.item()``).
    x : 1-D floating-point tensor, the point.
    radius : ε > 0, in the units of x.
    samples : number of sampled gradients (default ``6 * x.numel()``).
    generator : draws the points (default: a CPU generator seeded with 0, on x's device).

    Examples
    --------
    >>> f = lambda x: x.abs().sum()                       # stationary at 0 only
    >>> goldstein_gap(f, torch.zeros(2, dtype=torch.float64), 0.1) < 1e-9
    True
    >>> round(goldstein_gap(f, torch.ones(2, dtype=torch.float64), 0.1), 6)  # = |∇f| = √2
    1.414214
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 1 or not x.is_floating_point():
        raise UserError("goldstein_gap: x must be a 1-D floating-point tensor")
    samples = 6 * x.numel() if samples is None else int(samples)
    _check("goldstein_gap", radius, samples)
    if generator is None:
        generator = torch.Generator(x.device).manual_seed(0)
    G = vmap(grad(loss))(_ball_points(x, radius, samples, generator))
    return min_norm_in_hull(G.T)


def goldstein_gaps(gradients: Callable[[torch.Tensor], torch.Tensor], X: torch.Tensor, radius: float,
                   samples: int, generators: Sequence[torch.Generator]) -> list[float]:
    """:func:`goldstein_gap` at S points at once, with a batched gradient.

    Point ``s`` samples its ``samples`` ball points from ``generators[s]`` (the draws
    :func:`goldstein_gap` makes with that generator), then one call
    ``gradients(Y)``, Y (S, samples, D) → (S, samples, D), evaluates them all: for losses
    with a closed-form gradient batched over problems (one per seed), one call replaces S
    ``torch.func`` transforms (about 1 ms each on a CPU, whatever the size). The hulls'
    min-norm points are then solved one by one (:func:`min_norm_in_hull`).

    Parameters
    ----------
    gradients : the loss's gradient, batched over the leading axis (point s's problem) and
        the samples.
    X : (S, D) floating-point tensor, the points.
    radius, samples : as for :func:`goldstein_gap` (``samples`` required).
    generators : S generators, one per point.
    """
    if not isinstance(X, torch.Tensor) or X.ndim != 2 or not X.is_floating_point():
        raise UserError("goldstein_gaps: X must be a 2-D (points, D) floating-point tensor")
    if len(generators) != X.shape[0]:
        raise UserError(f"goldstein_gaps: {X.shape[0]} points but {len(generators)} generators")
    _check("goldstein_gaps", radius, int(samples))
    Y = torch.stack([_ball_points(x, radius, int(samples), g) for x, g in zip(X, generators)])
    G = gradients(Y)
    if G.shape != Y.shape:
        raise UserError(f"goldstein_gaps: gradients returned shape {tuple(G.shape)}, "
                        f"expected {tuple(Y.shape)}")
    return [min_norm_in_hull(g.T) for g in G]
