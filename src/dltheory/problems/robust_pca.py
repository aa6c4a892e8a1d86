"""Robust PCA as an over-parametrized least-squares problem whose flat minima solve PCP."""

from __future__ import annotations

import math

import torch

from dltheory.errors import ConfigError
from dltheory.problems.base import Problem, _check_fraction, _check_shape, _check_sizes, _relative_error


class FactoredRobustPCA(Problem):
    r"""Low-rank plus sparse, both factored: ``M ≈ LRᵀ + c·(P ⊙ Q)`` fit by least squares.

    The data ``M = M* + S*``: ``M* = L*R*ᵀ`` of shape (n1, n2) and rank r with incoherent
    factors (i.i.d. ±1/√n entries, the incoherence parameter μ = 1 of Candès, Li, Ma, Wright
    2011), ``S*`` nonzero on a uniformly random fraction ``corruption`` of the entries with
    random signs and magnitudes uniform in ``[1, 3]·max|M*|``. The objective

    .. math:: f(L, R, P, Q) = \frac{1}{2 n_1 n_2} \|LR^\top + c\,P \odot Q - M\|_F^2

    interpolates on a continuum (any ``X = LRᵀ`` with ``S = M − X`` written as ``c·P⊙Q``):
    every point of it is a global minimizer, almost none recovers ``M*``. Its Hessian trace
    has no residual-curvature term (no parameter enters a residual twice), so everywhere

    .. math:: \operatorname{tr}\nabla^2 f = \frac{n_2\|L\|_F^2 + n_1\|R\|_F^2
              + c^2(\|P\|_F^2 + \|Q\|_F^2)}{n_1 n_2},

    and over the factorizations of one interpolant ``(X, S)`` its minimum is
    ``2(√(n1n2)‖X‖_* + c‖S‖₁)/(n1n2)`` (AM–GM on the singular values for LRᵀ; on each entry
    for P⊙Q — the Hadamard over-parametrization of ℓ1, Hoff 2017). The flattest global
    minimizer is therefore the solution of principal component pursuit,

    .. math:: \min_{X + S = M} \|X\|_* + \lambda \|S\|_1, \qquad \lambda = c/\sqrt{n_1 n_2},

    which recovers ``(M*, S*)`` exactly for incoherent ``M*`` and randomly supported sparse
    ``S*`` with λ = 1/√max(n1, n2) (Candès et al. 2011, Theorem 1.1) — the default weight.
    This is the mechanism of Ding, Drusvyatskiy, Fazel, Harchaoui (2024) in a smooth
    formulation: flatness of an over-parametrized interpolating model is a norm that the
    convex theory knows to recover. (Their robust-PCA analysis treats the ℓ1 loss; that
    formulation is :class:`~dltheory.problems.RobustPCA`, whose minimizers do not
    interpolate and whose Hessian trace is piecewise constant.) Params are
    ``{"L": (n1, width), "R": (n2, width), "P": (n1, n2), "Q": (n1, n2)}``.

    Parameters
    ----------
    n1, n2 : matrix shape.
    rank : rank r of M*.
    corruption : fraction of corrupted entries, in (0, 1).
    width : columns of L and R (default: min(n1, n2), the most over-parametrized).
    weight : the PCP weight λ > 0 that flatness implies (default 1/√max(n1, n2)); it sets
        the sparse factor's scale ``c = λ√(n1n2)``.
    generator, dtype, device : where the instance comes from and lives.

    References
    ----------
    Candès, Li, Ma, Wright, "Robust principal component analysis?", J. ACM 58(3), 2011.
    Hoff, "Lasso, fractional norm and structured sparse estimation using a Hadamard product
    parametrization", Computational Statistics & Data Analysis 115, 2017.
    Ding, Drusvyatskiy, Fazel, Harchaoui, "Flat minima generalize for low-rank matrix
    recovery", Information and Inference 13(2), 2024.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> problem = FactoredRobustPCA(8, 8, 1, 0.05, generator=g)
    >>> float(problem.loss(problem.ground_truth)) < 1e-30, problem.weight == 8 ** -0.5
    (True, True)
    """

    def __init__(self, n1: int, n2: int, rank: int, corruption: float, *, width: int | None = None,
                 weight: float | None = None, generator: torch.Generator, dtype=torch.float64, device="cpu"):
        super().__init__(dtype, device)
        width = min(n1, n2) if width is None else width
        _check_sizes("FactoredRobustPCA", n1=n1, n2=n2, rank=rank, width=width)
        _check_fraction("FactoredRobustPCA", "corruption", corruption, closed=False)
        if width < rank or rank > min(n1, n2):
            raise ConfigError(f"FactoredRobustPCA: need rank <= width and rank <= min(n1, n2), got "
                              f"rank={rank}, width={width}, n1={n1}, n2={n2}")
        weight = 1 / math.sqrt(max(n1, n2)) if weight is None else weight
        if not (isinstance(weight, (int, float)) and weight > 0):
            raise ConfigError(f"FactoredRobustPCA: weight must be > 0, got {weight!r}")
        self.n1, self.n2, self.rank, self.width = n1, n2, rank, width
        self.corruption, self.weight = corruption, float(weight)
        self.c = self.weight * math.sqrt(n1 * n2)

        def rademacher(*shape):
            return torch.where(self._rand(*shape, generator=generator) < 0.5, -1.0, 1.0).to(dtype)

        self.L_star = rademacher(n1, rank) / math.sqrt(n1)
        self.R_star = rademacher(n2, rank) / math.sqrt(n2)
        self.M_star = self.L_star @ self.R_star.mT
        support = self._rand(n1, n2, generator=generator) < corruption
        size = float(self.M_star.abs().max()) * (1 + 2 * self._rand(n1, n2, generator=generator))
        self.S_star = torch.where(support, rademacher(n1, n2) * size, torch.zeros_like(size))
        self.M = self.M_star + self.S_star

    def _parts(self, params):
        if not isinstance(params, dict) or set(params) != {"L", "R", "P", "Q"}:
            raise ConfigError("FactoredRobustPCA: params must be a dict with keys 'L', 'R', 'P', 'Q'")
        for name, shape in (("L", (self.n1, self.width)), ("R", (self.n2, self.width)),
                            ("P", (self.n1, self.n2)), ("Q", (self.n1, self.n2))):
            _check_shape("FactoredRobustPCA", name, params[name], shape)
        return params["L"], params["R"], params["P"], params["Q"]

    def low_rank(self, params) -> torch.Tensor:
        """``X = LRᵀ``."""
        L, R, _, _ = self._parts(params)
        return L @ R.mT

    def sparse(self, params) -> torch.Tensor:
        """``S = c·(P ⊙ Q)``."""
        _, _, P, Q = self._parts(params)
        return self.c * P * Q

    def residuals(self, params) -> torch.Tensor:
        """``vec(LRᵀ + c·P⊙Q − M)``: the loss is ``½·mean(r²)``."""
        L, R, P, Q = self._parts(params)
        return (L @ R.mT + self.c * P * Q - self.M).reshape(-1)

    def residual_jacobian(self, params) -> dict[str, torch.Tensor]:
        """``∂r_ij/∂params`` in closed form, each (n1·n2, *shape): ∂r_ij/∂L_kl = δ_ik R_jl,
        ∂r_ij/∂R_kl = δ_jk L_il, ∂r_ij/∂P_ij = c·Q_ij, ∂r_ij/∂Q_ij = c·P_ij."""
        L, R, P, Q = self._parts(params)
        m = self.n1 * self.n2
        eye1, eye2 = (torch.eye(k, dtype=L.dtype, device=L.device) for k in (self.n1, self.n2))
        return {"L": torch.einsum("ik,jl->ijkl", eye1, R).reshape(m, self.n1, self.width),
                "R": torch.einsum("jk,il->ijkl", eye2, L).reshape(m, self.n2, self.width),
                "P": torch.diag_embed(self.c * Q.reshape(-1)).reshape(m, self.n1, self.n2),
                "Q": torch.diag_embed(self.c * P.reshape(-1)).reshape(m, self.n1, self.n2)}

    def residual_gram(self, params) -> torch.Tensor:
        """``J Jᵀ = I ⊗ RRᵀ + LLᵀ ⊗ I + diag(c²(Q² + P²))`` (n1·n2 square), O(n⁴), where
        the product of the dense J costs n⁴·(2w + 2n): 2.9 GFLOP at n = 30 (flat-minima-
        recovery's full shape), the Gauss–Newton stage's whole cost there."""
        L, R, P, Q = self._parts(params)
        eye1, eye2 = (torch.eye(k, dtype=L.dtype, device=L.device) for k in (self.n1, self.n2))
        K = torch.kron(eye1, R @ R.mT) + torch.kron(L @ L.mT, eye2)
        return K + torch.diag_embed((self.c ** 2 * (P ** 2 + Q ** 2)).reshape(-1))

    def loss(self, params):
        return 0.5 * (self.residuals(params) ** 2).mean()

    def hessian_trace(self, params) -> torch.Tensor:
        """The trace of the Hessian at ``params``, exact everywhere (see the class docstring).

        Differentiable, so ``loss + λ·hessian_trace`` can be trained.
        """
        L, R, P, Q = self._parts(params)
        return (self.n2 * (L ** 2).sum() + self.n1 * (R ** 2).sum()
                + self.c ** 2 * ((P ** 2).sum() + (Q ** 2).sum())) / (self.n1 * self.n2)

    def init(self, generator, scale=1.0):
        """L, R entries N(0, scale²/n); P, Q entries N(0, scale²·max|M*|/c) (c·P⊙Q ~ S*'s size)."""
        s = math.sqrt(float(self.M_star.abs().max()) / self.c)
        return {"L": scale * self._randn(self.n1, self.width, generator=generator) / math.sqrt(self.n1),
                "R": scale * self._randn(self.n2, self.width, generator=generator) / math.sqrt(self.n2),
                "P": scale * s * self._randn(self.n1, self.n2, generator=generator),
                "Q": scale * s * self._randn(self.n1, self.n2, generator=generator)}

    @property
    def ground_truth(self):
        """The flattest factorization of ``(M*, S*)``: balanced L, R; ``|P| = |Q| = √(|S*|/c)``."""
        U, sigma, Vh = torch.linalg.svd(self.M_star, full_matrices=False)
        t = (self.n1 / self.n2) ** 0.25  # n2‖L‖² = n1‖R‖² at the minimum over L ↦ Lt, R ↦ R/t
        root = sigma[:self.rank].sqrt()
        pad = (0, self.width - self.rank)
        magnitude = (self.S_star.abs() / self.c).sqrt()
        return {"L": torch.nn.functional.pad(U[:, :self.rank] * root * t, pad),
                "R": torch.nn.functional.pad(Vh[:self.rank].mT * root / t, pad),
                "P": torch.sign(self.S_star) * magnitude, "Q": magnitude}

    def recovery_error(self, params) -> float:
        """``‖LRᵀ − M*‖_F / ‖M*‖_F`` (at an interpolant S = M − X, so S's error is the same)."""
        return _relative_error(self.low_rank(params).detach(), self.M_star)
