"""One-hidden-layer ReLU networks: the designed objective of Ge, Lee, Ma (2018) and the square loss.

Teacher ``y = a*ᵀ relu(B*x)``, ``x ~ N(0, I_d)``, ``a* > 0``, B* (m×d) with orthonormal rows.
Two population objectives of the student's first layer B (m×d), both in closed form:

* :class:`ReLULandscapeDesign` — the objective G of Ge, Lee, Ma (ICLR 2018, eq. 2.6 and
  Theorem 2.3) built from the 4th Hermite moment ``E[y·He₄(x)]``; all its local minima are
  signed permutations of (rescaled) B*.
* :class:`ReLUSquareLoss` — ``½E[(a*ᵀrelu(Bx) − y)²]`` with the output layer fixed at a*,
  whose population landscape has spurious local minima (Safran, Shamir, ICML 2018).
"""

from __future__ import annotations

import math
from functools import cached_property

import torch
from scipy.optimize import linear_sum_assignment

from dltheory.errors import ConfigError
from dltheory.problems.base import Problem, _check_shape, _check_sizes


def relu_hermite_coefficient(n: int) -> float:
    r"""``σ̂_n = E[relu(z) h_n(z)]``, z ~ N(0, 1), ``h_n = He_n/√(n!)`` the normalized Hermite polynomial.

    Gaussian integration by parts gives ``E[f(z)He_n(z)] = E[f⁽ⁿ⁾(z)]``; relu'' = δ and
    ``φ⁽ᵏ⁾ = (−1)ᵏHe_kφ``, so for n ≥ 2 ``E[relu·He_n] = φ(0)He_{n−2}(0)``: zero for odd n ≥ 3,
    and ``σ̂_4 = −1/√(2π·24)``.
    """
    if n < 0:
        raise ConfigError(f"relu_hermite_coefficient: n must be >= 0, got {n}")
    phi0 = 1 / math.sqrt(2 * math.pi)
    if n == 0:
        return phi0
    if n == 1:
        return 0.5
    k = n - 2
    if k % 2:
        return 0.0
    he_k_at_0 = (-1) ** (k // 2) * math.prod(range(k - 1, 0, -2))  # He_k(0) = (−1)^{k/2}(k−1)!!
    return phi0 * he_k_at_0 / math.sqrt(math.factorial(n))


def hermite4_pairs(U: torch.Tensor, V: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    r"""``He₄(x)[u_j, u_j, v_k, v_k]/√24`` for all rows j of U, k of V and samples x: (N, J, K).

    The 4th Hermite tensor ``x^{⊗4} − 6·sym(x⊗x⊗I) + 3·sym(I⊗I)`` contracted with ``u⊗u⊗v⊗v``:
    ``(uᵀx)²(vᵀx)² − ‖u‖²(vᵀx)² − ‖v‖²(uᵀx)² − 4(uᵀv)(uᵀx)(vᵀx) + ‖u‖²‖v‖² + 2(uᵀv)²``,
    so that ``E[y·hermite4_pairs] = σ̂₄ Σ_i a_i ⟨b_i*, u⟩²⟨b_i*, v⟩²`` (Ge, Lee, Ma 2018, §2).
    """
    p, q = x @ U.mT, x @ V.mT  # (N, J), (N, K)
    nu, nv, uv = (U * U).sum(-1), (V * V).sum(-1), U @ V.mT
    value = ((p ** 2)[:, :, None] * (q ** 2)[:, None, :] - nu[:, None] * (q ** 2)[:, None, :]
             - nv[None, :] * (p ** 2)[:, :, None] - 4 * uv * p[:, :, None] * q[:, None, :]
             + (nu[:, None] * nv[None, :] + 2 * uv ** 2))
    return value / math.sqrt(24)


class _ReLUTeacher(Problem):
    def __init__(self, d, width, generator, dtype, device, output_range=(1.0, 2.0)):
        super().__init__(dtype, device)
        width = d if width is None else width
        _check_sizes(type(self).__name__, d=d, width=width)
        if width > d:
            raise ConfigError(f"{type(self).__name__}: width must be <= d (orthonormal rows), got "
                              f"width={width}, d={d}")
        low, high = output_range
        if not 0 < low <= high:
            raise ConfigError(f"{type(self).__name__}: output_range must satisfy 0 < low <= high, got "
                              f"{output_range}")
        self.d, self.width = d, width
        self.B_star = self._random_orthogonal(d, generator)[:width]
        self.a_star = low + (high - low) * self._rand(width, generator=generator)

    def _check(self, B):
        _check_shape(type(self).__name__, "B", B, (self.width, self.d))
        return B

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's labels ``a*ᵀrelu(B*x)`` for inputs x of shape (N, d)."""
        return torch.relu(x @ self.B_star.mT) @ self.a_star

    def init(self, generator, scale=1.0):
        """Rows i.i.d. N(0, I/d)·scale (unit norm on average, as B*'s rows)."""
        return scale * self._randn(self.width, self.d, generator=generator) / math.sqrt(self.d)

    def _matching_error(self, B, truth, signed: bool, scale=None) -> float:
        """Largest ``‖b_j − t_π(j)‖/scale_π(j)`` (up to sign if ``signed``) under the best matching π."""
        difference = (B[:, None, :] - truth[None, :, :]).norm(dim=-1)
        if signed:
            difference = torch.minimum(difference, (B[:, None, :] + truth[None, :, :]).norm(dim=-1))
        if scale is not None:
            difference = difference / scale[None, :]
        rows, cols = linear_sum_assignment(difference.cpu().numpy())
        return float(difference[rows, cols].max())


class ReLULandscapeDesign(_ReLUTeacher):
    r"""The landscape-design objective G of Ge, Lee, Ma (ICLR 2018) for an orthonormal teacher.

    With ``φ(v, w, x) = He₄(x)[v, v, w, w]/√24`` (:func:`hermite4_pairs`),

    .. math:: G(B) = \operatorname{sign}(\hat\sigma_4)\Bigl(\mathbb E\bigl[y \sum_{j\ne k}
              φ(b_j, b_k, x)\bigr] - μ\,\mathbb E\bigl[y \sum_j φ(b_j, b_j, x)\bigr]\Bigr)
              + λ \sum_j (\|b_j\|^2 - 1)^2 ,

    and since ``E[y·φ(v, w, x)] = σ̂₄ Σ_i a_i*⟨b_i*, v⟩²⟨b_i*, w⟩²`` its population value is, with
    ``S_ij = ⟨b_i*, b_j⟩²``,

    .. math:: G(B) = |\hat\sigma_4| \sum_i a_i^*\Bigl[\Bigl(\sum_j S_{ij}\Bigr)^2
              - (1 + μ) \sum_j S_{ij}^2\Bigr] + λ \sum_j (\|b_j\|^2 - 1)^2 .

    Theorem 2.3: for μ ≤ c/κ(a*), λ ≥ a*_max/c (c a small universal constant) every local
    minimum is ``B = DPB*``, P a permutation and D diagonal with ``D_jj = ±√s_j``; here
    ``s_j = λ/(λ − |σ̂₄|μa_j*)`` exactly (so :attr:`global_min_value` is
    ``−Σ_j α_jλ/(λ − α_j)``, ``α_j = |σ̂₄|μa_j*``). ``λ`` is given in units of |σ̂₄|
    (``lam=a_max/c`` means ``λ = |σ̂₄|a_max/c``), so that both terms have the same scale.

    ``samples=None`` uses the population tensor (closed form); ``samples=N`` replaces the
    expectation by the mean over N Gaussian inputs (the 4th-order moment tensor ``T̂`` is
    formed once, d⁴ entries), the estimator the paper's SGD uses.

    Recovery error: the largest ``min ‖b_j/‖b_j‖ ∓ b*_π(j)‖`` under the best matching π (rows
    normalized: the minimizers' row norms √s_j are part of the design, not of B*).

    Parameters
    ----------
    d : input dimension.
    width : hidden units m ≤ d (default d).
    c : the constant of Theorem 2.3; sets μ = c/κ and λ = a_max/c unless given.
    mu, lam : override μ and λ (λ in units of |σ̂₄|).
    samples : None (population) or the number of samples of the empirical objective.
    generator, dtype, device : where the instance comes from and lives.

    References
    ----------
    Ge, Lee, Ma, "Learning one-hidden-layer neural networks with landscape design", ICLR 2018.
    """

    def __init__(self, d: int, width: int | None = None, *, c: float = 0.1, mu: float | None = None,
                 lam: float | None = None, samples: int | None = None, generator: torch.Generator,
                 dtype=torch.float64, device="cpu"):
        super().__init__(d, width, generator, dtype, device)
        if not 0 < c <= 1:
            raise ConfigError(f"ReLULandscapeDesign: c must be in (0, 1], got {c}")
        kappa = float(self.a_star.max() / self.a_star.min())
        self.mu = c / kappa if mu is None else mu
        self.sigma4 = relu_hermite_coefficient(4)
        self.lam = abs(self.sigma4) * (float(self.a_star.max()) / c if lam is None else lam)
        if self.mu < 0 or not self.lam > abs(self.sigma4) * self.mu * float(self.a_star.max()):
            raise ConfigError(f"ReLULandscapeDesign: need mu >= 0 and lam > mu·a_max (bounded below), got "
                              f"mu={self.mu}, lam={self.lam / abs(self.sigma4)}")
        self.samples = samples
        if samples is not None:
            _check_sizes("ReLULandscapeDesign", samples=samples)
            x = self._randn(samples, d, generator=generator)
            self.moment = self._empirical_moment(x, self.labels(x))

    def _empirical_moment(self, x, y):
        """``T̂ = mean_n y_n He₄(x_n)/√24`` as a (d², d²) matrix (symmetric in both index pairs)."""
        d = self.d
        eye = torch.eye(d, dtype=self.dtype, device=self.device)
        xx = x[:, :, None] * x[:, None, :]  # (N, d, d)
        w = y / x.shape[0]
        T = torch.einsum("n,nab,ncd->abcd", w, xx, xx)
        M2 = torch.einsum("n,nab->ab", w, xx)
        pairs = (torch.einsum("ab,cd->abcd", eye, M2) + torch.einsum("ac,bd->abcd", eye, M2)
                 + torch.einsum("ad,bc->abcd", eye, M2) + torch.einsum("bc,ad->abcd", eye, M2)
                 + torch.einsum("bd,ac->abcd", eye, M2) + torch.einsum("cd,ab->abcd", eye, M2))
        constant = (torch.einsum("ab,cd->abcd", eye, eye) + torch.einsum("ac,bd->abcd", eye, eye)
                    + torch.einsum("ad,bc->abcd", eye, eye))
        T = T - pairs + w.sum() * constant
        return (T / math.sqrt(24)).reshape(d * d, d * d)

    def pair_moments(self, B: torch.Tensor) -> torch.Tensor:
        """``Q_jk = E[y·φ(b_j, b_k, x)]`` (population closed form, or the empirical tensor): (m, m)."""
        if self.samples is None:
            S = (self.B_star @ B.mT) ** 2  # S_ij = ⟨b_i*, b_j⟩²
            return self.sigma4 * (S.mT * self.a_star) @ S
        W = (B[..., :, :, None] * B[..., :, None, :]).flatten(-2)  # rows b_j ⊗ b_j
        return W @ self.moment @ W.mT

    def loss(self, params):
        return self.batched_loss(self._check(params))

    def batched_loss(self, B: torch.Tensor) -> torch.Tensor:
        """G of a stack of points B of shape (..., m, d): shape (...) (no shape check)."""
        Q = self.pair_moments(B)
        diagonal = torch.diagonal(Q, dim1=-2, dim2=-1).sum(-1)
        designed = math.copysign(1.0, self.sigma4) * (Q.sum((-2, -1)) - diagonal - self.mu * diagonal)
        return designed + self.lam * (((B * B).sum(-1) - 1) ** 2).sum(-1)

    @cached_property
    def _scales(self) -> torch.Tensor:
        alpha = abs(self.sigma4) * self.mu * self.a_star
        return self.lam / (self.lam - alpha)

    @property
    def ground_truth(self):
        """``diag(√s)B*``: the population minimizer with the identity permutation and + signs."""
        return self._scales.sqrt()[:, None] * self.B_star

    @property
    def global_min_value(self):
        if self.samples is not None:
            return None
        alpha = abs(self.sigma4) * self.mu * self.a_star
        return float(-(alpha * self.lam / (self.lam - alpha)).sum())

    def recovery_error(self, params):
        B = self._check(params).detach()
        return self._matching_error(B / B.norm(dim=1, keepdim=True), self.B_star, signed=True)


def _arccos_kernel(U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    r"""``E[relu(uᵀx)relu(vᵀx)] = ‖u‖‖v‖(sin θ + (π − θ)cos θ)/(2π)`` for all row pairs: (J, K).

    θ = 2·atan2(‖û − v̂‖, ‖û + v̂‖) (stable near θ = 0 and π, unlike arccos), Cho & Saul 2009.
    """
    nu, nv = U.norm(dim=-1, keepdim=True), V.norm(dim=-1, keepdim=True)
    u, v = (U / nu)[..., :, None, :], (V / nv)[..., None, :, :]
    tiny = torch.finfo(U.dtype).tiny  # keeps the gradient of the norm finite (zero) at û = ±v̂
    apart = (((u - v) ** 2).sum(-1) + tiny).sqrt()
    along = (((u + v) ** 2).sum(-1) + tiny).sqrt()
    theta = 2 * torch.atan2(apart, along)
    return nu * nv.mT * (torch.sin(theta) + (math.pi - theta) * torch.cos(theta)) / (2 * math.pi)


class ReLUSquareLoss(_ReLUTeacher):
    r"""The population square loss of a one-hidden-layer ReLU student with the output layer fixed at a*.

    .. math:: L(B) = \tfrac12 \mathbb E_{x\sim N(0, I)}\bigl[(a^{*\top}\mathrm{relu}(Bx)
              - a^{*\top}\mathrm{relu}(B^*x))^2\bigr],

    in closed form through the arc-cosine kernel (:func:`_arccos_kernel`). Its global
    minimum 0 is at ``b_j = (a*_π(j)/a*_j) b*_π(j)`` for a permutation π (relu is positively
    homogeneous), but the landscape has spurious local minima for m = d ≥ 6 (Safran, Shamir
    2018, with a* = 1); Ge, Lee, Ma 2018 design G to avoid them. Recovery error: the largest
    ``‖a*_j b_j − a*_π(j) b*_π(j)‖/a*_π(j)`` under the best matching π (no signs: relu is not odd).

    Parameters
    ----------
    d, width, generator, dtype, device : as in :class:`ReLULandscapeDesign`.
    output_range : a*_i ~ U[low, high] (``(1, 1)`` is Safran and Shamir's a* = 1).

    References
    ----------
    Safran, Shamir, "Spurious local minima are common in two-layer ReLU neural networks",
    ICML 2018.
    Cho, Saul, "Kernel methods for deep learning", NeurIPS 2009 (the arc-cosine kernel).
    """

    def __init__(self, d: int, width: int | None = None, *, output_range=(1.0, 2.0),
                 generator: torch.Generator, dtype=torch.float64, device="cpu"):
        super().__init__(d, width, generator, dtype, device, output_range)

    def loss(self, params):
        return self.batched_loss(self._check(params))

    def batched_loss(self, B: torch.Tensor) -> torch.Tensor:
        """L of a stack of points B of shape (..., m, d): shape (...) (no shape check)."""
        a, T = self.a_star, self.B_star
        student = ((a[:, None] * a) * _arccos_kernel(B, B)).sum((-2, -1))
        cross = ((a[:, None] * a) * _arccos_kernel(B, T)).sum((-2, -1))
        teacher = ((a[:, None] * a) * _arccos_kernel(T, T)).sum((-2, -1))
        return 0.5 * (student - 2 * cross + teacher)

    @property
    def ground_truth(self):
        return self.B_star.clone()

    def recovery_error(self, params):
        # relu is positively homogeneous: unit j with weight a_j* computes unit i of the teacher
        # when a_j*b_j = a_i*b_i*, so the identifiable rows are a_j*b_j (matched up to permutation)
        B = self._check(params).detach()
        a = self.a_star[:, None]
        return self._matching_error(a * B, a * self.B_star, signed=False, scale=self.a_star)
