"""How far a homogeneous network's parameters are from a KKT point of the max-margin problem.

For an L-homogeneous network (``f(cθ; x) = c^L f(θ; x)`` for c > 0: ReLU nets without biases,
L = depth) and separable data, gradient flow on the logistic or exponential loss converges in
direction to a KKT point of

    min ½‖θ‖²   s.t.   q_i(θ) := y_i f(θ; x_i) ≥ 1   (i = 1..n)                    (P)

(Lyu & Li 2020, Theorem 4.4; Ji & Telgarsky 2020). A direction θ is rescaled to
``θ̃ = θ / q_min^{1/L}`` (so min_i q_i = 1), and it is an (ε, δ)-KKT point of (P) (Lyu & Li,
Definition C.4) when some λ ≥ 0 gives

    ‖θ̃ − Σ λ_i ∇q_i(θ̃)‖ ≤ ε      and      Σ λ_i (q_i(θ̃) − 1) ≤ δ.

We report them scale-free — ε/‖θ̃‖ and Lδ/‖θ̃‖² (Euler's identity ⟨θ̃, ∇q_i⟩ = L q_i makes
‖θ̃‖² ≈ L Σλ_i at a KKT point) — for the λ ≥ 0 minimizing their sum, a small cvxpy SOCP.
Both are 0 exactly at a KKT point; λ = 0 gives (1, 0), so the residual is at most 1.

The SOCP is solved in the k = min(n, P) coordinates of the gradients' span rather than in
the P parameters: with ∇q = [∇q_1 … ∇q_n] = QR (thin QR) and r = θ̃ − QQᵀθ̃,

    ‖θ̃ − Σ λ_i ∇q_i‖² = ‖Qᵀθ̃ − Rλ‖² + ‖r‖²,

so the cone has k + 1 entries whatever the width of the network, and the program, with R,
Qᵀθ̃, ‖r‖ and the complementarity weights as cvxpy Parameters, is built once per (k, n)
and reused (DPP): a sweep that checks every checkpoint of every seed pays cvxpy's
canonicalization once. The residuals reported are recomputed from λ in the P coordinates.

References
----------
Lyu, Li, "Gradient descent maximizes the margin of homogeneous neural networks", ICLR 2020.
Ji, Telgarsky, "Directional convergence and alignment in deep learning", NeurIPS 2020.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from dltheory.errors import ShapeError, SolverError
from dltheory.reference._solve import solve


@dataclass(frozen=True)
class KKTResidual:
    """The (ε, δ)-KKT residuals of a candidate direction, scale-free.

    Attributes
    ----------
    stationarity : ``‖θ̃ − Σ λ_i ∇q_i(θ̃)‖ / ‖θ̃‖``.
    complementarity : ``L Σ λ_i (q_i(θ̃) − 1) / ‖θ̃‖²``.
    residual : their sum (0 exactly at a KKT point of (P), at most 1).
    multipliers : λ, for the rescaled θ̃.
    normalized_margin : ``min_i q_i(θ) / ‖θ‖^L``, the quantity gradient descent increases.
    """

    stationarity: float
    complementarity: float
    residual: float
    multipliers: np.ndarray
    normalized_margin: float


def _flatten(params):
    """(flat float64 vector, function from a flat vector back to params of the same layout)."""
    if isinstance(params, torch.Tensor):
        return params.detach().double().reshape(-1), lambda v: v.reshape(params.shape)
    if isinstance(params, dict) and all(isinstance(v, torch.Tensor) for v in params.values()):
        names = list(params)
        shapes = [params[k].shape for k in names]
        sizes = [params[k].numel() for k in names]
        flat = torch.cat([params[k].detach().double().reshape(-1) for k in names])

        def unflatten(v):
            return {k: part.reshape(s) for k, part, s in zip(names, torch.split(v, sizes), shapes)}
        return flat, unflatten
    raise ShapeError("homogeneous_kkt_residual: params must be a tensor or a dict of tensors")


@lru_cache(maxsize=32)
def _kkt_program(k: int, n: int):
    """min_{λ ≥ 0} ‖(b − Rλ, ρ)‖ + cᵀλ for R (k, n), b (k,), ρ ≥ 0, c (n,) as Parameters."""
    import cvxpy as cp

    R, b, c = cp.Parameter((k, n)), cp.Parameter(k), cp.Parameter(n)
    rho = cp.Parameter(nonneg=True)
    lam = cp.Variable(n, nonneg=True)
    problem = cp.Problem(cp.Minimize(cp.norm(cp.hstack([b - R @ lam, cp.reshape(rho, (1,), order="C")]))
                                     + c @ lam))
    return problem, (R, b, rho, c), lam


def homogeneous_kkt_residual(f: Callable, params, X, y, *, degree: int,
                             tol: float = 1e-6) -> KKTResidual:
    """The KKT residuals of the direction of ``params`` for the max-margin problem (P).

    Parameters
    ----------
    f : ``f(params, X) -> (n,)`` network outputs, positively homogeneous of order ``degree``
        in params (float64 params are passed).
    params : a tensor or a dict of tensors (the functional form of ``torch.func``).
    X : (n, ...) inputs, y : (n,) labels ±1.
    degree : the homogeneity order L (checked numerically).
    tol : the accepted disagreement between the solver's objective and the residuals
        recomputed from its multipliers.

    Raises
    ------
    ShapeError : ``f`` is not ``degree``-homogeneous, or bad shapes/labels.
    SolverError : the candidate does not separate the data (no rescaling makes it feasible
        for (P)), or the solver fails.

    Examples
    --------
    >>> X = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [2.0, 1.0]]); y = torch.tensor([1.0, -1.0, 1.0])
    >>> linear = lambda w, X: X.double() @ w
    >>> round(homogeneous_kkt_residual(linear, torch.tensor([1.0, 0.0]), X, y, degree=1).residual, 6)
    0.0
    """
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
        raise ShapeError(f"homogeneous_kkt_residual: degree must be an integer >= 1 (got {degree!r})")
    y = torch.as_tensor(y).detach().double().reshape(-1)
    if not bool((y.abs() == 1).all()):
        raise ShapeError("homogeneous_kkt_residual: labels y must be ±1")
    theta, unflatten = _flatten(params)
    if not bool(torch.isfinite(theta).all()):
        raise ShapeError("homogeneous_kkt_residual: params contain NaN or inf")

    def margins(v: torch.Tensor) -> torch.Tensor:
        out = f(unflatten(v), X)
        if out.shape != y.shape:
            raise ShapeError(f"homogeneous_kkt_residual: f returned shape {tuple(out.shape)}, "
                             f"expected {tuple(y.shape)}")
        return y * out.double()

    q = margins(theta).detach()
    scaled = margins(2.0 * theta).detach()
    if not torch.allclose(scaled, 2.0 ** degree * q, rtol=1e-8, atol=1e-12 * float(q.abs().max())):
        raise ShapeError(f"homogeneous_kkt_residual: f is not positively homogeneous of degree "
                         f"{degree} in params (f(2θ) ≠ 2^{degree} f(θ))")
    q_min = float(q.min())
    if not q_min > 0:
        raise SolverError(f"homogeneous_kkt_residual: the candidate does not separate the data "
                          f"(smallest margin {q_min:.3g}), so it is not feasible for the max-margin "
                          f"problem at any scale")
    theta_t = theta / q_min ** (1.0 / degree)
    q_t = (q / q_min).numpy()
    # (n, P): rows ∇q_i(θ̃), all n backward passes as one vmapped pass
    G = torch.autograd.functional.jacobian(margins, theta_t, vectorize=True).numpy()
    th = theta_t.numpy()
    norm2 = float(th @ th)
    Q, R = np.linalg.qr(G.T)  # (P, k), (k, n)
    b = Q.T @ th
    problem, (R_p, b_p, rho_p, c_p), lam = _kkt_program(*R.shape)
    scale = np.sqrt(norm2)
    R_p.value, b_p.value = R / scale, b / scale
    rho_p.value = np.linalg.norm(th - Q @ b) / scale
    c_p.value = degree * (q_t - 1.0) / norm2
    solve(problem, "homogeneous_kkt_residual", lam)  # the recomputation below decides
    lam_val = np.maximum(np.asarray(lam.value, dtype=float), 0.0)
    stationarity = float(np.linalg.norm(th - G.T @ lam_val) / np.sqrt(norm2))
    complementarity = degree * float((q_t - 1.0) @ lam_val) / norm2
    residual = stationarity + complementarity
    if abs(residual - float(problem.value)) > tol or residual > 1.0 + tol:
        raise SolverError(f"homogeneous_kkt_residual: the solver's answer is inconsistent "
                          f"(objective {problem.value:.3e}, recomputed {residual:.3e})")
    return KKTResidual(stationarity=stationarity, complementarity=complementarity,
                       residual=residual, multipliers=lam_val,
                       normalized_margin=q_min / float(theta.norm()) ** degree)
