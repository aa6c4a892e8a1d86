"""Two-layer networks f(x) = scale · Σ_r a_r σ(w_rᵀx), NTK or mean-field scaled."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from dltheory.errors import ConfigError
from dltheory.models._batched import SeedBatched, check_positive_int, get_activation

SCALINGS = ("ntk", "mean-field", "unit")
OUTER_INITS = ("sign", "gaussian")


class TwoLayer(SeedBatched):
    r"""A two-layer network, ``S`` seeds at once.

    .. math:: f(x) = \mathrm{scale} \cdot \sum_{r=1}^m a_r\, \sigma(w_r^\top x),
              \qquad w_r \sim N(0, I_d),\ a_r \sim \mathrm{unif}\{\pm 1\}\ (\text{or } N(0,1))

    with ``scale = 1/√m`` (NTK scaling: each weight moves O(1/√m) while the loss goes to
    zero, the lazy regime of Du, Zhai, Póczos, Singh 2019 and Jacot et al. 2018) or
    ``scale = 1/m`` (mean-field scaling: the network is an average over the empirical
    measure of its neurons, whose weights move O(1); Mei, Montanari, Nguyen 2018), or 1.

    Parameters
    ----------
    d, m : input dimension and width (number of hidden units).
    generators : one ``torch.Generator`` per seed; seed k draws ``W`` then ``a`` from
        ``generators[k]``.
    activation : ``"relu"``, ``"square"``, ``"tanh"``, ``"softplus"`` or ``"identity"``.
    scaling : ``"ntk"`` (1/√m), ``"mean-field"`` (1/m) or ``"unit"`` (1).
    train_outer : whether ``a`` is a parameter (else a fixed buffer, as in Du et al. 2019).
    outer_init : ``"sign"`` (a_r = ±1) or ``"gaussian"`` (a_r ~ N(0, 1)).

    Attributes
    ----------
    W : (S, m, d) first-layer weights; a : (S, m) outer weights; scale : float.

    References
    ----------
    S. S. Du, X. Zhai, B. Póczos, A. Singh, "Gradient Descent Provably Optimizes
    Over-parameterized Neural Networks", ICLR 2019, eq. (2).
    S. Mei, A. Montanari, P.-M. Nguyen, "A mean field view of the landscape of two-layer
    neural networks", PNAS 115(33), 2018.

    Examples
    --------
    >>> gens = [torch.Generator().manual_seed(s) for s in range(3)]
    >>> net = TwoLayer(5, 100, generators=gens)
    >>> net(torch.randn(8, 5, dtype=torch.float64)).shape
    torch.Size([3, 8])
    >>> torch.equal(net.W[1], TwoLayer(5, 100, generators=[torch.Generator().manual_seed(1)]).W[0])
    True
    """

    def __init__(self, d: int, m: int, *, generators: Sequence[torch.Generator],
                 activation: str = "relu", scaling: str = "ntk", train_outer: bool = True,
                 outer_init: str = "sign", dtype: torch.dtype = torch.float64,
                 device: str | torch.device = "cpu"):
        super().__init__(generators, dtype, device)
        self.d, self.m = check_positive_int("d", d), check_positive_int("m", m)
        if scaling not in SCALINGS:
            raise ConfigError(f"unknown scaling {scaling!r}; choose one of: {', '.join(SCALINGS)}")
        if outer_init not in OUTER_INITS:
            raise ConfigError(f"unknown outer_init {outer_init!r}; choose one of: "
                              f"{', '.join(OUTER_INITS)}")
        self.activation_name, self.sigma = activation, get_activation(activation)
        self.scaling = scaling
        self.scale = {"ntk": 1 / math.sqrt(m), "mean-field": 1 / m, "unit": 1.0}[scaling]
        W = self._draw((m, d))[0]
        a = self._signs(m) if outer_init == "sign" else self._draw((m,))[0]
        self.W = nn.Parameter(W)
        if train_outer:
            self.a = nn.Parameter(a)
        else:
            self.register_buffer("a", a)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden activations σ(W x) of shape (S, n, m)."""
        return self.sigma(torch.matmul(self.batch_input(x), self.W.mT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs of shape (S, n) for ``x`` of shape (n, d) or (S, n, d)."""
        return self.scale * torch.matmul(self.features(x), self.a[..., None])[..., 0]


class QuadraticNet(TwoLayer):
    r"""A two-layer network with quadratic activation, f(x) = Σ_r a_r (w_rᵀx)² = xᵀ M x.

    ``M = Σ_r a_r w_r w_rᵀ`` (:meth:`matrix`), so the ℓ2-regularized loss in ``W`` is a
    non-convex reformulation of a nuclear-norm-regularized convex problem in ``M``; with
    ``m ≥ √(2n)`` hidden units every second-order stationary point is a global minimum
    (Du & Lee 2018, Theorem 3.1). The outer layer is fixed (±1) by default, as there.

    References
    ----------
    S. S. Du, J. D. Lee, "On the Power of Over-parametrization in Neural Networks with
    Quadratic Activation", ICML 2018.
    R. Livni, S. Shalev-Shwartz, O. Shamir, "On the Computational Efficiency of Training
    Neural Networks", NeurIPS 2014, Section 5.

    Examples
    --------
    >>> net = QuadraticNet(4, 6, generators=[torch.Generator().manual_seed(0)])
    >>> x = torch.randn(3, 4, dtype=torch.float64)
    >>> bool(torch.allclose(net(x)[0], ((x @ net.matrix()[0]) * x).sum(1)))
    True
    """

    def __init__(self, d: int, m: int, *, generators: Sequence[torch.Generator],
                 scaling: str = "unit", train_outer: bool = False,
                 dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"):
        super().__init__(d, m, generators=generators, activation="square", scaling=scaling,
                         train_outer=train_outer, outer_init="sign", dtype=dtype, device=device)

    def matrix(self) -> torch.Tensor:
        """``M = scale · Σ_r a_r w_r w_rᵀ`` of shape (S, d, d): f(x) = xᵀ M x."""
        return self.scale * torch.matmul(self.W.mT * self.a[:, None, :], self.W)

