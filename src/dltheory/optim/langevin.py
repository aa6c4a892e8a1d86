"""Noisy gradient descent: the Euler–Maruyama discretization of Langevin dynamics."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch.optim import Optimizer

from dltheory.optim._common import _check_generator, _check_nonnegative, _check_positive, _evaluate


class NoisyGD(Optimizer):
    r"""Gradient descent with isotropic Gaussian noise (unadjusted Langevin algorithm).

    .. math:: w_{t+1} = w_t - \eta \nabla L(w_t) + \sqrt{2\eta/\beta}\; \xi_t,
              \qquad \xi_t \sim \mathcal N(0, I)

    For small η the iterates sample approximately from the Gibbs measure
    ``∝ exp(−β L(w))``; β is the inverse temperature.

    Parameters
    ----------
    params : iterable of tensors or parameter groups.
    lr : step size η ≥ 0.
    beta : inverse temperature β > 0 (``float("inf")`` is not allowed: use :class:`GD`).
    generator : the ``torch.Generator`` the noise is drawn from (on the parameters' device),
        or a list of S generators for parameters stacked over S independent runs (seeds)
        along their first axis: row s's noise is then drawn from generator s, with the shape
        of one row, so it is bit for bit the noise that run draws alone with its own
        generator and one optimizer (the batched seeds of a claim need this).

    References
    ----------
    Welling, Teh, "Bayesian learning via stochastic gradient Langevin dynamics", ICML 2011.
    Raginsky, Rakhlin, Telgarsky, "Non-convex learning via stochastic gradient Langevin
    dynamics: a nonasymptotic analysis", COLT 2017.
    Mei, Montanari, Nguyen, "A mean field view of the landscape of two-layer neural
    networks", PNAS 2018 (noisy GD on the particles of a two-layer network).
    """

    def __init__(self, params, lr: float, beta: float, *,
                 generator: torch.Generator | Sequence[torch.Generator], draw_ahead: int = 1):
        _check_nonnegative("learning rate", lr)
        _check_positive("inverse temperature beta", beta)
        if isinstance(draw_ahead, bool) or not isinstance(draw_ahead, int) or draw_ahead < 1:
            raise ValueError(f"Invalid draw_ahead: {draw_ahead!r} (a positive number of steps)")
        self.draw_ahead = draw_ahead
        self._ahead: torch.Tensor | None = None  # (generators, steps, noise per step)
        self._used = 0
        per_row = isinstance(generator, (list, tuple))
        for g in generator if per_row else [generator]:
            _check_generator(g)
        self.generator = list(generator) if per_row else generator
        super().__init__(params, dict(lr=lr, beta=beta))
        if per_row:
            for group in self.param_groups:
                for p in group["params"]:
                    if p.dim() == 0 or p.shape[0] != len(self.generator):
                        raise ValueError(f"NoisyGD: {len(self.generator)} generators need every "
                                         f"parameter stacked over {len(self.generator)} rows "
                                         f"(got shape {tuple(p.shape)})")
        if draw_ahead > 1:
            params = [p for group in self.param_groups for p in group["params"]]
            if len({(p.dtype, p.device) for p in params}) > 1:
                raise ValueError("NoisyGD: draw_ahead > 1 needs every parameter of one dtype and device")
            rows = len(self.generator) if per_row else 1
            sizes = [p.numel() // rows for p in params]
            # where each parameter's noise lies in one step's draw, and that draw's length
            self._slices = {id(p): (sum(sizes[:i]), n) for i, (p, n) in enumerate(zip(params, sizes))}
            self._draw = dict(size=sum(sizes), dtype=params[0].dtype, device=params[0].device)

    def _noise(self, p: torch.Tensor) -> torch.Tensor:
        kw = dict(dtype=p.dtype, device=p.device)
        if self.draw_ahead > 1:
            if id(p) not in self._slices:
                raise ValueError("NoisyGD: with draw_ahead > 1 every parameter must be given at "
                                 "construction (not by add_param_group)")
            start, n = self._slices[id(p)]
            return self._ahead[:, self._used, start:start + n].reshape(p.shape)
        if isinstance(self.generator, torch.Generator):
            return torch.randn(p.shape, generator=self.generator, **kw)
        return torch.stack([torch.randn(p.shape[1:], generator=g, **kw) for g in self.generator])

    def _draw_ahead(self) -> None:
        """The noise of the next ``draw_ahead`` steps: one ``randn`` per generator."""
        gens = self.generator if isinstance(self.generator, list) else [self.generator]
        size, kw = self._draw["size"], dict(dtype=self._draw["dtype"], device=self._draw["device"])
        self._ahead = torch.stack([torch.randn(self.draw_ahead, size, generator=g, **kw) for g in gens])
        self._used = 0

    @torch.no_grad()
    def step(self, closure=None):
        """One Langevin step; ``closure`` (optional) re-evaluates the loss and its gradient."""
        loss = _evaluate(closure)
        if self.draw_ahead > 1 and (self._ahead is None or self._used == self.draw_ahead):
            self._draw_ahead()
        for group in self.param_groups:
            noise_scale = math.sqrt(2.0 * group["lr"] / group["beta"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.add_(p.grad, alpha=-group["lr"]).add_(self._noise(p), alpha=noise_scale)
        self._used += 1
        return loss
