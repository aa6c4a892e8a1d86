"""Solvers shared by the flat-minima claims: the flattest interpolant and the nearest one.

Ding, Drusvyatskiy, Fazel, Harchaoui, "Flat minima generalize for low-rank matrix
recovery", Information and Inference 13(2), 2024: the flattest global minimizer is the
limit of the minimizers of ``f + λ·tr∇²f`` as λ → 0 (§3). A problem here needs ``loss``,
``hessian_trace`` (differentiable) and ``residuals`` (``loss = ½·mean(r²)``).
"""

from __future__ import annotations

import torch

# λ → 0; then Gauss–Newton moves to the nearest interpolant, O(λ·‖D‖) ≈ 1e-6 away
LAMBDAS = (1e-3, 1e-5, 1e-7)
_GN_STEPS = 30  # Levenberg–Marquardt steps onto the interpolating set (linear rate, even degenerate)


def _flatten(init):
    """One flat leaf for ``init`` (a tensor or a dict of tensors) and the map back."""
    names = list(init) if isinstance(init, dict) else None
    leaves = [init[k] for k in names] if names else [init]
    shapes, sizes = [x.shape for x in leaves], [x.numel() for x in leaves]

    def unflatten(v):
        parts = [c.reshape(s) for c, s in zip(v.split(sizes), shapes)]
        return dict(zip(names, parts)) if names else parts[0]

    return torch.cat([x.reshape(-1) for x in leaves]).detach().clone(), unflatten


def minimize_lbfgs(objective, init, iterations: int):
    """Minimize ``objective(params)`` by L-BFGS (strong Wolfe) over one flat leaf.

    One flat leaf: the parameter of :class:`QuadraticNetwork` is a transpose, whose gradient
    is not contiguous, which ``torch.optim.LBFGS`` cannot flatten.
    """
    flat, unflatten = _flatten(init)
    flat.requires_grad_()
    opt = torch.optim.LBFGS([flat], lr=1, max_iter=iterations, tolerance_grad=1e-13,
                            tolerance_change=1e-18, history_size=30, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = objective(unflatten(flat))
        value.backward()
        return value

    opt.step(closure)
    return unflatten(flat.detach())


def gauss_newton(residuals, init, iterations: int = _GN_STEPS):
    """Levenberg–Marquardt onto the interpolating set ``{θ : r(θ) = 0}``.

    Each step is the minimum-norm damped Gauss–Newton step ``d = −Jᵀ(JJᵀ + μI)⁻¹r`` (J the
    m × p Jacobian, m < p), accepted when it lowers ``‖r‖²`` (then μ shrinks, else it grows).
    Why not L-BFGS: where the interpolant is rank-deficient (an over-parametrized factor of a
    low-rank matrix) the minimum is degenerate, the loss is quartic in the excess columns and
    first-order methods slow to a sublinear rate, while Gauss–Newton still halves the excess
    per step (Newton on ``EEᵀ = 0``). Accept/reject by ``torch.where``: no host sync.
    """
    v, unflatten = _flatten(init)

    def r_of(x):
        return residuals(unflatten(x))

    jacobian = torch.func.jacrev(r_of)
    r = r_of(v)
    mu = torch.ones((), dtype=v.dtype, device=v.device)
    for _ in range(iterations):
        J = jacobian(v)
        K = J @ J.mT
        damping = mu * 1e-3 * torch.diagonal(K).mean()
        eye = torch.eye(len(r), dtype=v.dtype, device=v.device)
        step = -J.mT @ torch.linalg.solve(K + damping * eye, r)
        r_new = r_of(v + step)
        better = (r_new ** 2).sum() < (r ** 2).sum()
        v = torch.where(better, v + step, v)
        r = torch.where(better, r_new, r)
        mu = torch.where(better, mu / 3, mu * 4)
    return unflatten(v)


def flattest_minimizer(problem, init, iterations: int, lambdas=LAMBDAS):
    """Trace-regularized training ``f + λ·tr∇²f`` along a decreasing sequence λ → 0.

    Each stage starts from the previous minimizer, so the iterate follows the path of
    regularized minimizers, whose limit is the flattest interpolant (Ding et al. 2024, §3);
    a last Gauss–Newton stage (λ = 0) closes the O(λ) residual that the regularizer leaves,
    moving to the nearest interpolant (minimum-norm steps).
    """
    params = init
    for lam in lambdas:
        params = minimize_lbfgs(lambda p, lam=lam: problem.loss(p) + lam * problem.hessian_trace(p), params,
                        iterations)
    return gauss_newton(problem.residuals, params)
