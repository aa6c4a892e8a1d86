"""Deep networks in the scaling of Du, Lee, Li, Wang, Zhai 2019: MLP and ResNet."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from dltheory.errors import ConfigError
from dltheory.models._batched import SeedBatched, c_sigma, check_positive_int, get_activation


class _Deep(SeedBatched):
    """First layer ``x⁽¹⁾ = √(c_σ/m) σ(W₁ x)`` and output ``f = aᵀ x⁽ᴸ⁾``, shared by MLP and ResNet.

    All weights are N(0, 1) (Du et al. 2019, Section 3); the √(c_σ/m) factors keep
    ``‖x⁽ʰ⁾‖ ≈ ‖x‖`` at initialization.
    """

    def __init__(self, d, m, generators, activation, train_outer, dtype, device):
        super().__init__(generators, dtype, device)
        self.d, self.m = check_positive_int("d", d), check_positive_int("m", m)
        self.activation_name, self.sigma = activation, get_activation(activation)
        self.c_sigma = c_sigma(activation)
        self.train_outer = train_outer

    def _outer(self, a: torch.Tensor) -> None:
        if self.train_outer:
            self.a = nn.Parameter(a)
        else:
            self.register_buffer("a", a)

    def _layer(self, W: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """√(c_σ/m) σ(W x) for a batch ``x`` of shape (S, n, fan_in) or (n, fan_in)."""
        return math.sqrt(self.c_sigma / W.shape[-2]) * self.sigma(torch.matmul(x, W.mT))

    def _output(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, self.a[..., None])[..., 0]


class MLP(_Deep):
    r"""A fully connected network, ``S`` seeds at once.

    .. math:: x^{(h)} = \sqrt{c_\sigma / m_h}\; \sigma(W_h x^{(h-1)}),\quad
              x^{(0)} = x,\quad f(x) = a^\top x^{(L)}

    with every weight N(0, 1) and ``c_σ = 1/E[σ(z)²]`` (Du et al. 2019, eq. 3).

    Parameters
    ----------
    d : input dimension.
    widths : hidden widths m_1, ..., m_L (L ≥ 1).
    generators : one ``torch.Generator`` per seed; seed k draws W_1, ..., W_L, a in order.
    activation : a name of :data:`dltheory.models.ACTIVATIONS`.
    train_outer : whether ``a`` is trained.

    References
    ----------
    S. S. Du, J. D. Lee, H. Li, L. Wang, X. Zhai, "Gradient Descent Finds Global Minima of
    Deep Neural Networks", ICML 2019, Section 3, eq. (3).

    Examples
    --------
    >>> net = MLP(3, [16, 16], generators=[torch.Generator().manual_seed(0)])
    >>> net(torch.randn(5, 3, dtype=torch.float64)).shape
    torch.Size([1, 5])
    """

    def __init__(self, d: int, widths: Sequence[int], *, generators: Sequence[torch.Generator],
                 activation: str = "relu", train_outer: bool = True,
                 dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"):
        widths = list(widths)
        if not widths:
            raise ConfigError("an MLP needs at least one hidden layer (widths is empty)")
        for w in widths:
            check_positive_int("every width", w)
        super().__init__(d, widths[-1], generators, activation, train_outer, dtype, device)
        self.widths = widths
        *weights, a = self._draw(*zip(widths, [d] + widths[:-1]), (widths[-1],))
        self.weights = nn.ParameterList(weights)
        self._outer(a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs of shape (S, n) for ``x`` of shape (n, d) or (S, n, d)."""
        h = self.batch_input(x)
        for W in self.weights:
            h = self._layer(W, h)
        return self._output(h)


class ResNet(_Deep):
    r"""The residual network of the slide, ``S`` seeds at once.

    .. math:: x^{(1)} = \sqrt{c_\sigma/m}\;\sigma(W_1 x),\qquad
              x^{(l)} = x^{(l-1)} + \frac{c_{res}}{L\sqrt m}\,\sigma(W_l x^{(l-1)})
              \ (l = 2, \dots, L),\qquad f(x) = a^\top x^{(L)}

    Every weight is N(0, 1). The 1/(L√m) on the residual branches is what lets Du et al.
    prove that GD reaches zero training loss with a width polynomial (not exponential) in
    the depth L; their analysis assumes a smooth, Lipschitz σ (e.g. ``"softplus"``).

    Parameters
    ----------
    d, m : input dimension and width of every hidden layer.
    depth : L ≥ 1 (the number of weight matrices W_1, ..., W_L).
    generators : one ``torch.Generator`` per seed; seed k draws W_1, then W_2..W_L, then a.
    activation : a name of :data:`dltheory.models.ACTIVATIONS`.
    c_res : the constant of the residual branches.
    train_outer : whether ``a`` is trained.

    Attributes
    ----------
    W_in : (S, m, d); W : (S, L−1, m, m) residual weights; a : (S, m).

    References
    ----------
    S. S. Du, J. D. Lee, H. Li, L. Wang, X. Zhai, "Gradient Descent Finds Global Minima of
    Deep Neural Networks", ICML 2019, Section 3, eq. (4) and Theorem 6.1.

    Examples
    --------
    >>> net = ResNet(3, 32, 4, generators=[torch.Generator().manual_seed(0)])
    >>> tuple(net.W.shape)
    (1, 3, 32, 32)
    """

    def __init__(self, d: int, m: int, depth: int, *, generators: Sequence[torch.Generator],
                 activation: str = "relu", c_res: float = 1.0, train_outer: bool = True,
                 dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"):
        super().__init__(d, m, generators, activation, train_outer, dtype, device)
        self.depth = check_positive_int("depth", depth)
        if not (isinstance(c_res, (int, float)) and math.isfinite(c_res) and c_res > 0):
            raise ConfigError(f"c_res must be a positive number, got {c_res!r}")
        self.c_res = float(c_res)
        W_in, W, a = self._draw((m, d), (depth - 1, m, m), (m,))
        self.W_in, self.W = nn.Parameter(W_in), nn.Parameter(W)
        self._outer(a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs of shape (S, n) for ``x`` of shape (n, d) or (S, n, d)."""
        h = self._layer(self.W_in, self.batch_input(x))
        branch = self.c_res / (self.depth * math.sqrt(self.m))
        for layer in range(self.depth - 1):
            h = h + branch * self.sigma(torch.matmul(h, self.W[:, layer].mT))
        return self._output(h)
