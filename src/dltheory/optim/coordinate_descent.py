"""Coordinate gradient descent: one scalar coordinate of the parameter vector per step."""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from dltheory.optim._common import _check_generator, _check_nonnegative, _evaluate, _flat_grad, _SingleGroup

_ORDERS = ("cyclic", "random", "greedy")


class CoordinateDescent(_SingleGroup, Optimizer):
    r"""Coordinate gradient descent over all parameters flattened into one vector.

    .. math:: w_{t+1} = w_t - \eta\, \partial_{i_t} L(w_t)\, e_{i_t}

    with ``i_t = t mod d`` (``"cyclic"``), ``i_t`` uniform on ``{0..d−1}`` (``"random"``), or
    ``i_t = argmax_i |∂_i L(w_t)|`` (``"greedy"``, Gauss–Southwell). Coordinates are numbered
    through the parameters in order, each flattened row-major. Cyclic and random coordinate
    descent with ``lr < 1/ℓ`` avoid strict saddles from almost every initialization
    (Lee et al. 2019). The partial derivative is read from the full gradient (the closure or
    a previous ``backward()``), which is exact but does not save the cost of a gradient.

    Parameters
    ----------
    params : iterable of tensors (a single group: coordinates are global).
    lr : step size η ≥ 0.
    order : ``"cyclic"``, ``"random"`` or ``"greedy"``.
    generator : ``torch.Generator`` for ``order="random"`` (required there, unused otherwise).

    References
    ----------
    Lee, Panageas, Piliouras, Simchowitz, Jordan, Recht, "First-order methods almost always
    avoid strict saddle points", Math. Programming 2019.
    Nutini, Schmidt, Laradji, Friedlander, Koepke, "Coordinate descent converges faster with
    the Gauss–Southwell rule than random selection", ICML 2015.
    Wright, "Coordinate descent algorithms", Math. Programming 2015.
    """

    def __init__(self, params, lr: float, order: str = "cyclic", *, generator: torch.Generator | None = None):
        _check_nonnegative("learning rate", lr)
        if order not in _ORDERS:
            raise ValueError(f"Invalid order: {order!r} (use one of {_ORDERS})")
        if order == "random":
            _check_generator(generator)
        self.generator = generator
        super().__init__(params, dict(lr=lr, order=order))

    def _coordinate(self, grad: torch.Tensor, t: int) -> int:
        order = self.param_groups[0]["order"]
        if order == "cyclic":
            return t % grad.numel()
        if order == "random":
            return int(torch.randint(grad.numel(), (), generator=self.generator))
        return int(torch.argmax(grad.abs()))

    @torch.no_grad()
    def step(self, closure=None):
        """Update one coordinate; ``closure`` (optional) re-evaluates loss and gradient."""
        loss = _evaluate(closure)
        state = self.state[self._params[0]]
        t = state.get("step", 0)
        grad = _flat_grad(self._params)
        i = self._coordinate(grad, t)
        for p in self._params:
            if i < p.numel():
                p.view(-1)[i] -= self.param_groups[0]["lr"] * grad[i]
                break
            i -= p.numel()
        state["step"] = t + 1
        return loss
