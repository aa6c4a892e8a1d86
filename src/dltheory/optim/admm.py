"""ADMM for global consensus (and, with one local loss, for the splitting f(x) + g(z))."""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from dltheory.optim._common import _check_positive, _evaluate, _SingleGroup


class ADMM(_SingleGroup, Optimizer):
    r"""Scaled-form ADMM for ``min_z Σ_{i=1}^N f_i(z) + g(z)`` in consensus form.

    The problem is rewritten as ``min Σ f_i(x_i) + g(z)`` s.t. ``x_i = z``; with scaled duals
    ``u_i`` and penalty ρ each step is (Boyd et al. 2011, eq. 7.6 with a regularizer):

    .. math::
        x_i &\leftarrow \operatorname*{argmin}_x f_i(x) + \tfrac\rho2 \|x - z + u_i\|^2
            \quad (\text{approximately: } K \text{ gradient steps of size } \eta
            \text{ from the previous } x_i),\\
        z &\leftarrow \operatorname{prox}_{g/(N\rho)}\Bigl(\tfrac1N \textstyle\sum_i (x_i + u_i)\Bigr),\\
        u_i &\leftarrow u_i + x_i - z.

    The optimizer's parameters hold the consensus variable z; the local copies x_i and duals
    u_i live in its state. N = 1 with a ``prox`` is the splitting ``min f(x) + g(z)``,
    ``x = z``. ``inner_steps=1`` is the linearized (gradient) ADMM whose iterates, for
    smooth non-convex f_i and ρ large enough, converge to stationary points (Hong et al.
    2016) and avoid strict saddles (Hong, Lee, Razaviyayn 2018; Lee et al. 2019).

    Parameters
    ----------
    params : the tensors of z (a single group). Each local loss is called as
        ``f_i(*tensors)`` with tensors shaped like them.
    local_losses : sequence of callables ``f_i``, each returning a scalar tensor.
    lr : step size η > 0 of the inner gradient steps on the augmented Lagrangian.
    rho : penalty ρ > 0.
    inner_steps : K ≥ 1 gradient steps per x-update.
    prox : optional ``prox(v, t) -> argmin_z g(z) + ‖z − v‖²/(2t)``, applied to each tensor of
        z (so g must be separable over the tensors); None means g = 0.

    References
    ----------
    Boyd, Parikh, Chu, Peleato, Eckstein, "Distributed optimization and statistical learning
    via the alternating direction method of multipliers", Found. Trends ML 2011, §3.1, §7.1.
    Hong, Luo, Razaviyayn, "Convergence analysis of alternating direction method of
    multipliers for a family of nonconvex problems", SIAM J. Optim. 2016.
    Hong, Lee, Razaviyayn, "Gradient primal-dual algorithm converges to second-order
    stationary solutions for nonconvex distributed optimization", ICML 2018.
    """

    def __init__(self, params, local_losses, lr: float, rho: float = 1.0, inner_steps: int = 1, prox=None):
        local_losses = list(local_losses)
        if not local_losses or not all(callable(f) for f in local_losses):
            raise ValueError(f"Invalid local_losses: {local_losses!r} (a non-empty sequence of callables)")
        _check_positive("learning rate", lr)
        _check_positive("rho", rho)
        if not (isinstance(inner_steps, int) and inner_steps >= 1):
            raise ValueError(f"Invalid inner_steps: {inner_steps}")
        if prox is not None and not callable(prox):
            raise ValueError(f"Invalid prox: {prox!r} (a callable prox(v, t) or None)")
        self.local_losses = local_losses
        self.prox = prox
        super().__init__(params, dict(lr=lr, rho=rho, inner_steps=inner_steps))
        for z in self._params:
            self.state[z]["x"] = [z.detach().clone() for _ in local_losses]
            self.state[z]["u"] = [torch.zeros_like(z) for _ in local_losses]

    def _update_local(self, i: int) -> None:
        group, zs = self.param_groups[0], self._params
        xs = [self.state[z]["x"][i] for z in zs]
        for _ in range(group["inner_steps"]):
            with torch.enable_grad():
                leaves = [x.detach().requires_grad_() for x in xs]
                lagrangian = self.local_losses[i](*leaves) + 0.5 * group["rho"] * sum(
                    ((x - z.detach() + self.state[z]["u"][i]) ** 2).sum() for x, z in zip(leaves, zs)
                )
                grads = torch.autograd.grad(lagrangian, leaves)
            xs = [x.detach() - group["lr"] * g for x, g in zip(leaves, grads)]
        for x, z in zip(xs, zs):
            self.state[z]["x"][i] = x

    @torch.no_grad()
    def step(self, closure=None):
        """One ADMM round (x-, z- and u-updates); returns ``closure()`` evaluated before it."""
        loss = _evaluate(closure)
        n, rho = len(self.local_losses), self.param_groups[0]["rho"]
        for i in range(n):
            self._update_local(i)
        for z in self._params:
            state = self.state[z]
            average = sum(x + u for x, u in zip(state["x"], state["u"])) / n
            z.copy_(average if self.prox is None else self.prox(average, 1.0 / (n * rho)))
            state["u"] = [u + x - z for x, u in zip(state["x"], state["u"])]
        return loss
