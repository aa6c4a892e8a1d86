"""Matrix sensing, covariance estimation from quadratic samples, and quadratic-activation networks.

All three recover a PSD low-rank ``M* = U*U*ᵀ`` from linear measurements
``y_i = ⟨A_i, M*⟩`` by minimizing the factored least squares

    f(U) = 1/(2m) Σ_i (⟨A_i, UUᵀ⟩ − y_i)²,

with Gaussian ``A_i`` (matrix sensing) or rank-one ``A_i = a_i a_iᵀ`` (covariance
estimation; a network with quadratic activation is the same loss in the variable W = Uᵀ).
"""

from __future__ import annotations

import math
from functools import cached_property

import torch

from dltheory.errors import ConfigError
from dltheory.problems._factorization import _SymmetricLowRank
from dltheory.problems.base import Problem, _check_shape, _check_sizes, _relative_error


class _SymmetricSensing(_SymmetricLowRank):
    def __init__(self, n, rank, measurements, width, generator, dtype, device):
        super().__init__(n, rank, width, generator, dtype, device)
        _check_sizes(type(self).__name__, measurements=measurements)
        self.measurements = measurements

    def _measure(self, U: torch.Tensor) -> torch.Tensor:
        """``(⟨A_i, UUᵀ⟩)_i`` for a factor U."""
        raise NotImplementedError

    def residuals(self, params) -> torch.Tensor:
        """``r_i = ⟨A_i, UUᵀ⟩ − y_i``: the loss is ``½·mean(r²)`` (for Gauss–Newton solvers)."""
        return self._measure(self._factor(params)) - self.y

    def residual_jacobian(self, params) -> torch.Tensor:
        """``∂r_i/∂params`` in closed form, shape (m, *params.shape): ``(A_i + A_iᵀ)U`` for
        the factor U, laid out as the params. ``torch.func.jacrev`` of :meth:`residuals`
        takes 38 ms (dense A_i) and 5–7 ms (A_i = a_i a_iᵀ) at n = 30, m = 178
        (flat-minima-recovery's full shape), where this takes under 1 ms; Gauss–Newton
        solvers take it when given."""
        return self._from_factor(self._factor_jacobian(self._factor(params)))

    def _factor_jacobian(self, U: torch.Tensor) -> torch.Tensor:
        """``((A_i + A_iᵀ)U)_i``, shape (m, n, width)."""
        raise NotImplementedError

    def loss(self, params):
        return 0.5 * (self.residuals(params) ** 2).mean()

    @cached_property
    def _curvature(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(1/m) Σ_i (A_i + A_iᵀ)²`` and ``(tr A_i)_i``: the data of :meth:`hessian_trace`."""
        raise NotImplementedError

    def hessian_trace(self, params) -> torch.Tensor:
        r"""The trace of the Hessian of the loss at ``params``, in closed form.

        With residuals ``r_i = ⟨A_i, UUᵀ⟩ − y_i``, ``∇_U r_i = (A_i + A_iᵀ)U`` and the second
        derivative of ``r_i`` along ``V`` is ``2⟨A_i, VVᵀ⟩``, whose trace over the coordinate
        directions is ``2k tr A_i`` (k the factor width); hence

        .. math:: \operatorname{tr} \nabla^2 f(U) = \Bigl\langle \frac1m \sum_i (A_i + A_i^\top)^2,
                  UU^\top \Bigr\rangle + \frac{2k}{m} \sum_i r_i \operatorname{tr} A_i .

        On the interpolating set (all ``r_i = 0``) only the first, weighted-trace term
        remains, which is why the flattest global minimizer is the solution of a weighted
        trace minimization over ``{X ⪰ 0 : 𝒜(X) = y}`` (Ding et al. 2024, Lemma 3.1 and
        Theorem 3.2). Differentiable, so ``loss + λ·hessian_trace`` can be trained.

        References
        ----------
        Ding, Drusvyatskiy, Fazel, Harchaoui, "Flat minima generalize for low-rank matrix
        recovery", Information and Inference 2024, Lemma 3.1, Theorem 3.2, §7.
        """
        U = self._factor(params)
        weight, traces = self._curvature
        residual = self._measure(U) - self.y
        return (weight * (U @ U.mT)).sum() + 2 * self.width * (residual * traces).mean()


class MatrixSensing(_SymmetricSensing):
    r"""Symmetric matrix sensing with Gaussian measurements, factored as UUᵀ.

    ``A_i`` has i.i.d. N(0, 1) entries, ``y_i = ⟨A_i, M*⟩``, and

    .. math:: f(U) = \frac1{2m} \sum_{i=1}^m (\langle A_i, UU^\top\rangle - y_i)^2
              \approx \tfrac12 \|UU^\top - M^*\|_F^2 .

    With m ≳ n·rank measurements (RIP) every local minimum is global and every saddle is
    strict (Bhojanapalli et al. 2016; Ge, Jin, Zheng 2017); with a full-width factor and
    small initialization GD finds the minimum-nuclear-norm solution (Gunasekar et al. 2017,
    Li, Ma, Zhang 2018).

    Parameters
    ----------
    n : matrix size.
    rank : rank r of M*.
    measurements : number m of measurements.
    width : columns of the factor U (default: rank).
    generator, dtype, device : where the instance comes from and lives.

    References
    ----------
    Bhojanapalli, Neyshabur, Srebro, "Global optimality of local search for low rank matrix
    recovery", NeurIPS 2016.
    Ge, Jin, Zheng, "No spurious local minima in nonconvex low rank problems: a unified
    geometric analysis", ICML 2017.
    """

    def __init__(self, n: int, rank: int, measurements: int, *, width: int | None = None,
                 generator: torch.Generator, dtype=torch.float64, device="cpu"):
        super().__init__(n, rank, measurements, width, generator, dtype, device)
        self.A = self._randn(measurements, n, n, generator=generator)
        self.y = self._measure(self.U_star)

    def _measure(self, U):
        return torch.einsum("mij,ij->m", self.A, U @ U.mT)

    def _factor_jacobian(self, U):
        return self._symmetrized @ U

    @cached_property
    def _symmetrized(self) -> torch.Tensor:
        return self.A + self.A.mT

    @cached_property
    def _curvature(self):
        S = self._symmetrized
        return (S @ S).mean(0), torch.diagonal(self.A, dim1=-2, dim2=-1).sum(-1)


class CovarianceEstimation(_SymmetricSensing):
    r"""Low-rank covariance estimation from quadratic samples ``y_i = a_iᵀ Σ* a_i``.

    ``a_i ~ N(0, I_n)``, ``Σ* = M* = U*U*ᵀ`` and

    .. math:: f(U) = \frac1{2m} \sum_{i=1}^m (\|U^\top a_i\|^2 - y_i)^2,

    matrix sensing with the rank-one measurements ``A_i = a_i a_iᵀ`` (cost O(m·n·width)
    per evaluation instead of O(m·n²)).

    Parameters
    ----------
    n, rank, measurements, width, generator, dtype, device : as in :class:`MatrixSensing`.

    References
    ----------
    Chen, Chi, Goldsmith, "Exact and stable covariance estimation from quadratic sampling via
    convex programming", IEEE Trans. Inf. Theory 2015.
    Ding, Drusvyatskiy, Fazel, Harchaoui, "Flat minima generalize for low-rank matrix
    recovery", Information and Inference 2024.
    """

    def __init__(self, n: int, rank: int, measurements: int, *, width: int | None = None,
                 generator: torch.Generator, dtype=torch.float64, device="cpu"):
        super().__init__(n, rank, measurements, width, generator, dtype, device)
        self.a = self._randn(measurements, n, generator=generator)
        self.y = self._measure(self.U_star)

    def _measure(self, U):
        return ((self.a @ U) ** 2).sum(-1)

    def _factor_jacobian(self, U):
        return 2 * self.a[:, :, None] * (self.a @ U)[:, None, :]  # (A_i + A_iᵀ)U = 2a_i(a_iᵀU)

    @cached_property
    def _curvature(self):
        # A_i = a_i a_iᵀ: (A_i + A_iᵀ)² = 4‖a_i‖² a_i a_iᵀ, never forming the m matrices A_i
        norms = (self.a ** 2).sum(-1)
        return 4 * (self.a.mT * norms) @ self.a / self.measurements, norms


class QuadraticNetwork(CovarianceEstimation):
    r"""Teacher–student two-layer network with quadratic activation (Du & Lee 2018).

    Student ``f_W(x) = Σ_j (w_jᵀx)² = ‖Wx‖²`` with W of shape (student_width, d); the
    teacher has ``teacher_width`` hidden units ``W*`` (rows N(0, I/d)); inputs ``x_i ~ N(0, I_d)``,
    labels ``y_i = f_{W*}(x_i)``, loss ``1/(2N) Σ (f_W(x_i) − y_i)²``. This is
    :class:`CovarianceEstimation` in the variable ``U = Wᵀ`` (``f_W(x) = xᵀWᵀWx``); the
    symmetry is W ↦ QW. With student width ≥ √(2N) every local minimum is global (Du & Lee
    2018, with weight decay; Soltanolkotabi et al. 2018).

    Parameters
    ----------
    d : input dimension.
    teacher_width, student_width : hidden units of teacher and student (student ≥ teacher).
    samples : number N of training examples.
    generator, dtype, device : where the instance comes from and lives.

    References
    ----------
    Du, Lee, "On the power of over-parametrization in neural networks with quadratic
    activation", ICML 2018.
    Soltanolkotabi, Javanmard, Lee, "Theoretical insights into the optimization landscape of
    over-parameterized shallow neural networks", IEEE Trans. Inf. Theory 2018.
    """

    def __init__(self, d: int, teacher_width: int, student_width: int, samples: int, *,
                 generator: torch.Generator, dtype=torch.float64, device="cpu"):
        super().__init__(d, teacher_width, samples, width=student_width, generator=generator, dtype=dtype,
                         device=device)

    @property
    def X(self) -> torch.Tensor:
        """The (N, d) training inputs."""
        return self.a

    def predict(self, W: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``f_W(x) = ‖Wx‖²`` for a batch ``x`` of shape (..., d)."""
        return ((x @ W.mT) ** 2).sum(-1)

    def _factor(self, params):
        _check_shape(type(self).__name__, "W", params, (self.width, self.n))
        return params.mT

    def _from_factor(self, U):
        return U.mT


def bilinear_residuals(A_flat: torch.Tensor, y: torch.Tensor, L: torch.Tensor,
                       R: torch.Tensor) -> torch.Tensor:
    """``⟨A_i, LRᵀ⟩ − y_i`` with ``A_flat`` (…, m, n1·n2); any leading (seed) axes broadcast.

    A product and a sum over the contiguous last axis, not ``einsum``: that is a BLAS
    matrix–vector product whose kernel, and rounding, changes with the number of stacked
    seeds, so a seed would not get the numbers it gets alone.
    """
    return (A_flat * (L @ R.mT).flatten(-2).unsqueeze(-2)).sum(-1) - y


def bilinear_trace(left: torch.Tensor, right: torch.Tensor, L: torch.Tensor,
                   R: torch.Tensor) -> torch.Tensor:
    """``⟨D_L, LLᵀ⟩ + ⟨D_R, RRᵀ⟩``: the data term of the bilinear Hessian trace (any leading axes)."""
    return (left * (L @ L.mT)).sum((-2, -1)) + (right * (R @ R.mT)).sum((-2, -1))


class AsymmetricMatrixSensing(Problem):
    r"""Bilinear (asymmetric) matrix sensing with Gaussian measurements, factored as LRᵀ.

    ``M* = L*R*ᵀ`` of shape (n1, n2) and rank r, ``y_i = ⟨A_i, M*⟩``, and

    .. math:: f(L, R) = \frac1{2m} \sum_i (\langle A_i, LR^\top\rangle - y_i)^2
              + \lambda\, \|L^\top L - R^\top R\|_F^2,

    the balancing regularizer (λ = 1/8 in Ge, Jin, Zheng 2017) removing the GL(r) scaling
    freedom that otherwise lets local search drift; the ground truth is the balanced
    factorization ``L* = PΣ^{1/2}``, ``R* = QΣ^{1/2}`` from the SVD ``M* = PΣQᵀ``. Params are
    ``{"L": (n1, width), "R": (n2, width)}``.

    Parameters
    ----------
    n1, n2 : matrix shape.
    rank : rank r of M*.
    measurements : number m of measurements.
    width : columns of the factors (default: rank).
    balance : λ ≥ 0.
    generator, dtype, device : where the instance comes from and lives.

    References
    ----------
    Tu, Boczar, Simchowitz, Soltanolkotabi, Recht, "Low-rank solutions of linear matrix
    equations via Procrustes flow", ICML 2016.
    Ge, Jin, Zheng, "No spurious local minima in nonconvex low rank problems: a unified
    geometric analysis", ICML 2017.
    """

    def __init__(self, n1: int, n2: int, rank: int, measurements: int, *, width: int | None = None,
                 balance: float = 0.125, generator: torch.Generator, dtype=torch.float64, device="cpu"):
        super().__init__(dtype, device)
        width = rank if width is None else width
        _check_sizes("AsymmetricMatrixSensing", n1=n1, n2=n2, rank=rank, measurements=measurements,
                     width=width)
        if width < rank or rank > min(n1, n2):
            raise ConfigError(f"AsymmetricMatrixSensing: need rank <= width and rank <= min(n1, n2), got "
                              f"rank={rank}, width={width}, n1={n1}, n2={n2}")
        if not balance >= 0:
            raise ConfigError(f"AsymmetricMatrixSensing: balance must be >= 0, got {balance}")
        self.n1, self.n2, self.rank, self.width, self.balance = n1, n2, rank, width, balance
        self.M_star = (self._randn(n1, rank, generator=generator) / math.sqrt(n1)) @ (
            self._randn(n2, rank, generator=generator) / math.sqrt(n2)).mT
        self.A = self._randn(measurements, n1, n2, generator=generator)
        self.y = torch.einsum("mij,ij->m", self.A, self.M_star)

    def _factors(self, params):
        if not isinstance(params, dict) or set(params) != {"L", "R"}:
            raise ConfigError("AsymmetricMatrixSensing: params must be a dict with keys 'L' and 'R'")
        _check_shape("AsymmetricMatrixSensing", "L", params["L"], (self.n1, self.width))
        _check_shape("AsymmetricMatrixSensing", "R", params["R"], (self.n2, self.width))
        return params["L"], params["R"]

    def residuals(self, params) -> torch.Tensor:
        """``r_i = ⟨A_i, LRᵀ⟩ − y_i``: the data term of the loss is ``½·mean(r²)``."""
        L, R = self._factors(params)
        return bilinear_residuals(self._A_flat, self.y, L, R)

    def residual_jacobian(self, params) -> dict[str, torch.Tensor]:
        """``∂r_i/∂L = A_i R`` and ``∂r_i/∂R = A_iᵀ L``, shapes (m, n1, width), (m, n2, width).
        ``torch.func.jacrev`` of :meth:`residuals` takes 126 ms at n = 30, m = 178 (it builds
        an m × m × n1·n2 product), where this takes ~1 ms."""
        L, R = self._factors(params)
        return {"L": self.A @ R, "R": self.A.mT @ L}

    def loss(self, params):
        L, R = self._factors(params)
        return 0.5 * (self.residuals(params) ** 2).mean() + self.balance * ((L.mT @ L - R.mT @ R) ** 2).sum()

    def hessian_trace(self, params) -> torch.Tensor:
        r"""The trace of the Hessian of the loss at ``params``, in closed form.

        The residual ``r_i = ⟨A_i, LRᵀ⟩ − y_i`` has gradients ``A_iR`` and ``A_iᵀL`` and a
        second derivative with no diagonal (L–L or R–R) entries, so the data term contributes
        ``⟨D_L, LLᵀ⟩ + ⟨D_R, RRᵀ⟩`` with ``D_L = (1/m)Σ A_iA_iᵀ``, ``D_R = (1/m)Σ A_iᵀA_i`` at
        every point (Ding et al. 2024, Lemma 3.1: on the interpolating set the flattest
        factorization minimizes ``‖D_L^{1/2}L‖² + ‖D_R^{1/2}R‖²``, a weighted nuclear norm of
        LRᵀ). The balancing term ``λ‖LᵀL − RᵀR‖²`` adds
        ``λ[4(k+1)(‖L‖² + ‖R‖²) + 4(n1 − n2) tr(LᵀL − RᵀR)]`` (k the factor width).
        Differentiable, so ``loss + λ·hessian_trace`` can be trained.

        References
        ----------
        Ding, Drusvyatskiy, Fazel, Harchaoui, "Flat minima generalize for low-rank matrix
        recovery", Information and Inference 2024, Lemma 3.1, Theorem 3.2.
        """
        L, R = self._factors(params)
        data = bilinear_trace(self._left_curvature, self._right_curvature, L, R)
        if self.balance == 0:
            return data
        gap = torch.diagonal(L.mT @ L - R.mT @ R).sum()
        return data + self.balance * (4 * (self.width + 1) * ((L ** 2).sum() + (R ** 2).sum())
                                      + 4 * (self.n1 - self.n2) * gap)

    @cached_property
    def _A_flat(self) -> torch.Tensor:
        return self.A.flatten(-2)

    @cached_property
    def _left_curvature(self) -> torch.Tensor:
        return (self.A @ self.A.mT).mean(0)

    @cached_property
    def _right_curvature(self) -> torch.Tensor:
        return (self.A.mT @ self.A).mean(0)

    def init(self, generator, scale=1.0):
        """Entries of L and R i.i.d. N(0, scale²/n1) and N(0, scale²/n2)."""
        return {"L": scale * self._randn(self.n1, self.width, generator=generator) / math.sqrt(self.n1),
                "R": scale * self._randn(self.n2, self.width, generator=generator) / math.sqrt(self.n2)}

    @property
    def ground_truth(self):
        P, S, Qh = torch.linalg.svd(self.M_star, full_matrices=False)
        root = S[:self.rank].sqrt()
        pad = (0, self.width - self.rank)
        return {"L": torch.nn.functional.pad(P[:, :self.rank] * root, pad),
                "R": torch.nn.functional.pad(Qh[:self.rank].mT * root, pad)}

    def recovery_error(self, params):
        L, R = self._factors(params)
        return _relative_error((L @ R.mT).detach(), self.M_star)
