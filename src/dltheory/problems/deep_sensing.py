"""Matrix sensing through a deep factorization ``X = W_L ⋯ W_1`` (a deep linear network).

The ``n1 × n2`` rank-r truth ``M*`` is measured by Gaussian ``A_i``, ``y_i = ⟨A_i, M*⟩``, and

    f(W_1, …, W_L) = 1/(2m) Σ_i (⟨A_i, W_L ⋯ W_1⟩ − y_i)²,

depth L ≥ 2 (L = 2 is bilinear sensing ``LRᵀ`` with ``L = W_2``, ``R = W_1ᵀ``).
"""

from __future__ import annotations

import math
from functools import cached_property

import torch

from dltheory.errors import ConfigError
from dltheory.problems.base import Problem, _check_shape, _check_sizes, _relative_error


class DeepMatrixSensing(Problem):
    r"""Gaussian matrix sensing with a depth-L factorization ``X = W_L ⋯ W_1``.

    ``W_1`` is (width, n2), the hidden ``W_l`` are (width, width), ``W_L`` is (n1, width);
    params are ``{"W1": …, …, "WL": …}``. ``M*`` is drawn as in
    :class:`AsymmetricMatrixSensing` (``PQᵀ`` with Gaussian ``P, Q`` scaled by ``1/√n``).

    Parameters
    ----------
    n1, n2 : matrix shape.
    rank : rank r of M*.
    measurements : number m of measurements.
    depth : number L ≥ 2 of factors.
    width : hidden width (default: rank).
    generator, dtype, device : where the instance comes from and lives.

    References
    ----------
    Ding, Drusvyatskiy, Fazel, Harchaoui, "Flat minima generalize for low-rank matrix
    recovery", Information and Inference 2024 (depth 2, and the discussion of depth).
    Gatmiry, Li, Chuang, Reddi, Ma, Jegelka, "The inductive bias of flatness regularization
    for deep matrix factorization", NeurIPS 2023.

    Examples
    --------
    >>> p = DeepMatrixSensing(4, 4, 1, 12, depth=3, width=4, generator=torch.Generator().manual_seed(0))
    >>> float(p.loss(p.ground_truth)) < 1e-28, sorted(p.ground_truth)
    (True, ['W1', 'W2', 'W3'])
    """

    def __init__(self, n1: int, n2: int, rank: int, measurements: int, *, depth: int,
                 width: int | None = None, generator: torch.Generator, dtype=torch.float64, device="cpu"):
        super().__init__(dtype, device)
        width = rank if width is None else width
        _check_sizes("DeepMatrixSensing", n1=n1, n2=n2, rank=rank, measurements=measurements, width=width)
        if not isinstance(depth, int) or depth < 2:
            raise ConfigError(f"DeepMatrixSensing: depth must be an integer >= 2, got {depth!r}")
        if width < rank or rank > min(n1, n2):
            raise ConfigError(f"DeepMatrixSensing: need rank <= width and rank <= min(n1, n2), got "
                              f"rank={rank}, width={width}, n1={n1}, n2={n2}")
        self.n1, self.n2, self.rank, self.depth, self.width = n1, n2, rank, depth, width
        self.measurements = measurements
        self.M_star = (self._randn(n1, rank, generator=generator) / math.sqrt(n1)) @ (
            self._randn(n2, rank, generator=generator) / math.sqrt(n2)).mT
        self.A = self._randn(measurements, n1, n2, generator=generator)
        self.y = torch.einsum("mij,ij->m", self.A, self.M_star)

    @property
    def shapes(self) -> dict[str, tuple[int, int]]:
        """The shape of every factor, ``W1`` first."""
        dims = [self.n2] + [self.width] * (self.depth - 1) + [self.n1]
        return {f"W{j}": (dims[j], dims[j - 1]) for j in range(1, self.depth + 1)}

    def _factors(self, params) -> list[torch.Tensor]:
        if not isinstance(params, dict) or set(params) != set(self.shapes):
            raise ConfigError(f"DeepMatrixSensing: params must be a dict with keys {', '.join(self.shapes)}")
        for name, shape in self.shapes.items():
            _check_shape("DeepMatrixSensing", name, params[name], shape)
        return [params[name] for name in self.shapes]

    def end_to_end(self, params) -> torch.Tensor:
        """``X = W_L ⋯ W_1``."""
        X = None
        for W in self._factors(params):
            X = W if X is None else W @ X
        return X

    def residuals(self, params) -> torch.Tensor:
        """``r_i = ⟨A_i, W_L ⋯ W_1⟩ − y_i``: the loss is ``½·mean(r²)``."""
        return torch.einsum("mij,ij->m", self.A, self.end_to_end(params)) - self.y

    def loss(self, params):
        return 0.5 * (self.residuals(params) ** 2).mean()

    def hessian_trace(self, params) -> torch.Tensor:
        r"""The trace of the Hessian of the loss at ``params``, in closed form, at every point.

        ``r_i`` is linear in each factor separately, so its Hessian has a zero diagonal and
        only the Gauss–Newton term is left, here and off the interpolating set alike:

        .. math:: \operatorname{tr}\nabla^2 f = \frac1m \sum_{i=1}^m \sum_{l=1}^L
                  \bigl\|W_{>l}^\top A_i W_{<l}^\top\bigr\|_F^2,

        ``W_{>l} = W_L ⋯ W_{l+1}`` and ``W_{<l} = W_{l−1} ⋯ W_1`` (identities at the ends),
        the gradient of ``r_i`` in ``W_l`` being ``W_{>l}ᵀ A_i W_{<l}ᵀ``. At depth 2 this is
        ``⟨D_L, W_2W_2ᵀ⟩ + ⟨D_R, W_1ᵀW_1⟩`` (Ding et al. 2024, Lemma 3.1). Differentiable.
        """
        Ws = self._factors(params)
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        for j in range(self.depth):  # the factor W_{j+1}
            G = self.A
            if j + 1 < self.depth:  # W_{>j+1}ᵀ A_i
                G = _product(Ws[j + 1:]).mT @ G
            if j > 0:  # … W_{<j+1}ᵀ
                G = G @ _product(Ws[:j]).mT
            total = total + (G ** 2).sum()
        return total / self.measurements

    @cached_property
    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``D_L = (1/m)Σ A_iA_iᵀ`` and ``D_R = (1/m)Σ A_iᵀA_i``, the depth-2 trace weights."""
        return (self.A @ self.A.mT).mean(0), (self.A.mT @ self.A).mean(0)

    def init(self, generator, scale=1.0):
        """Entries of ``W_l`` i.i.d. N(0, scale²/fan_in)."""
        return {name: scale * self._randn(*shape, generator=generator) / math.sqrt(shape[1])
                for name, shape in self.shapes.items()}

    @property
    def ground_truth(self):
        """The balanced factorization of ``M* = PΣQᵀ``: ``W_1 = Σ^{1/L}Qᵀ``, ``W_L = PΣ^{1/L}``,
        hidden ``W_l = Σ^{1/L}``, zero-padded to the width."""
        P, S, Qh = torch.linalg.svd(self.M_star, full_matrices=False)
        r, k = self.rank, self.width
        root = S[:r] ** (1.0 / self.depth)
        pad = torch.nn.functional.pad
        out = {"W1": pad(root[:, None] * Qh[:r], (0, 0, 0, k - r)),
               f"W{self.depth}": pad(P[:, :r] * root, (0, k - r))}
        for j in range(2, self.depth):
            out[f"W{j}"] = pad(torch.diag(root), (0, k - r, 0, k - r))
        return {name: out[name] for name in self.shapes}

    def recovery_error(self, params) -> float:
        return _relative_error(self.end_to_end(params).detach(), self.M_star)


def _product(Ws) -> torch.Tensor:
    """``W_j ⋯ W_i`` for the list ``[W_i, …, W_j]``."""
    X = Ws[0]
    for W in Ws[1:]:
        X = W @ X
    return X
