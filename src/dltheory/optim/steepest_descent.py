"""Steepest descent with respect to an ℓp norm of the whole parameter vector."""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer

from dltheory.optim._common import _add_flat, _check_nonnegative, _evaluate, _flat_grad, _SingleGroup

_NAMED_NORMS = {"l1": 1.0, "l2": 2.0, "linf": math.inf}


def _norm_exponent(norm) -> float:
    if isinstance(norm, str):
        if norm not in _NAMED_NORMS:
            raise ValueError(f"Invalid norm: {norm!r} (use 'l1', 'l2', 'linf' or a float p >= 1)")
        return _NAMED_NORMS[norm]
    if isinstance(norm, bool) or not isinstance(norm, (int, float)) or not norm >= 1:
        raise ValueError(f"Invalid norm: {norm!r} (use 'l1', 'l2', 'linf' or a float p >= 1)")
    return float(norm)


def steepest_direction(g: torch.Tensor, p: float) -> torch.Tensor:
    r"""``‖g‖_* · argmax_{‖u‖_p ≤ 1} ⟨u, g⟩`` for a vector ``g`` (the dual norm is ℓq, 1/p + 1/q = 1).

    * p = 2: ``g``;
    * p = 1: ``g_i e_i`` with ``i = argmax |g_i|`` (the first such i on ties);
    * p = ∞: ``‖g‖_1 sign(g)``;
    * 1 < p < ∞: ``‖g‖_q^{2−q} sign(g) |g|^{q−1}``.

    Zero for ``g = 0``.
    """
    if p == 2:
        return g.clone()
    if p == 1:
        i = torch.argmax(g.abs())
        direction = torch.zeros_like(g)
        direction[i] = g[i]
        return direction
    if math.isinf(p):
        return g.abs().sum() * torch.sign(g)
    q = p / (p - 1)
    dual_norm = torch.linalg.vector_norm(g, ord=q)
    if dual_norm == 0:
        return torch.zeros_like(g)
    return dual_norm ** (2 - q) * torch.sign(g) * g.abs() ** (q - 1)


class SteepestDescent(_SingleGroup, Optimizer):
    r"""Steepest descent with respect to the ℓp norm of all parameters as one vector.

    .. math:: \Delta w_t = -\eta\, \|\nabla L(w_t)\|_{*}\;
              \operatorname*{argmax}_{\|u\| \le 1} \langle u, \nabla L(w_t) \rangle

    (Gunasekar et al. 2018, eq. 9), ‖·‖_* the dual norm. For ℓ2 this is :class:`GD`; for ℓ1
    it moves only the coordinate of largest |∂_i L| by ``−η ∂_i L`` (greedy coordinate
    descent, :class:`CoordinateDescent` with ``order="greedy"``); for ℓ∞ it is sign
    descent scaled by ``‖∇L‖_1``. On separable data with the exponential loss its direction
    converges to the ℓp max-margin separator (Gunasekar et al. 2018, Theorem 5).

    Parameters
    ----------
    params : iterable of tensors (a single group: the norm couples all parameters).
    lr : step size η ≥ 0.
    norm : ``"l1"``, ``"l2"``, ``"linf"``, or a float p ≥ 1 (``math.inf`` allowed).

    References
    ----------
    Gunasekar, Lee, Soudry, Srebro, "Characterizing implicit bias in terms of optimization
    geometry", ICML 2018.
    Boyd, Vandenberghe, "Convex Optimization", 2004, §9.4 (steepest descent).
    """

    def __init__(self, params, lr: float, norm="l2"):
        _check_nonnegative("learning rate", lr)
        super().__init__(params, dict(lr=lr, p=_norm_exponent(norm)))

    @torch.no_grad()
    def step(self, closure=None):
        """One steepest-descent step; ``closure`` (optional) re-evaluates loss and gradient."""
        loss = _evaluate(closure)
        group = self.param_groups[0]
        direction = steepest_direction(_flat_grad(self._params), group["p"])
        _add_flat(self._params, direction, alpha=-group["lr"])
        return loss
