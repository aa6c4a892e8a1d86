"""Norm-based and PAC-Bayes generalization bounds, with every constant written out.

Each function returns the number its theorem states (no hidden "≲"); the docstring says
which equation and under which assumptions. ``weights`` are the layer matrices
``W_1, ..., W_L`` (each (out, in), as ``nn.Linear.weight``), of a network
``x ↦ W_L σ(W_{L-1} ⋯ σ(W_1 x))`` with 1-Lipschitz, positively homogeneous ``σ`` (ReLU)
and no biases unless said otherwise.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from dltheory.errors import ShapeError, UserError
from dltheory.measure._pytree import Params, _Layout


def _matrices(weights: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    weights = list(weights)
    if not weights or any(not isinstance(W, torch.Tensor) or W.dim() != 2 for W in weights):
        raise ShapeError("weights must be a non-empty sequence of matrices (out, in)")
    for lower, upper in zip(weights, weights[1:]):
        if upper.shape[1] != lower.shape[0]:
            raise ShapeError(f"layer shapes do not chain: {tuple(lower.shape)} then {tuple(upper.shape)}")
    return [W.detach().double() for W in weights]


def _check_probability(delta: float) -> None:
    if not 0 < delta < 1:
        raise UserError(f"delta must lie in (0, 1), got {delta!r}")


def spectral_complexity(weights: Sequence[torch.Tensor], references: Sequence[torch.Tensor] | None = None,
                        lipschitz: Sequence[float] | None = None) -> float:
    """``R_A = (∏_i ρ_i ‖A_i‖_σ) (Σ_i ‖A_iᵀ − M_iᵀ‖_{2,1}^{2/3} / ‖A_i‖_σ^{2/3})^{3/2}``.

    Bartlett, Foster, Telgarsky (2017), eq. (1.2): the spectral complexity of a network with
    layer matrices ``A_i``, reference matrices ``M_i`` (zero by default; the initialization
    is a common choice) and activation Lipschitz constants ``ρ_i`` (1 by default).
    ``‖B‖_{2,1}`` is the sum of the Euclidean norms of the columns of ``B``, so
    ``‖Aᵀ‖_{2,1}`` sums the norms of the rows of ``A``.

    References
    ----------
    P. L. Bartlett, D. J. Foster, M. Telgarsky, "Spectrally-normalized margin bounds for
    neural networks", NeurIPS 2017.

    Examples
    --------
    >>> import torch
    >>> # ∏‖A‖_σ = 6; each ‖Aᵀ‖_{2,1}/‖A‖_σ = 2, so 6 · (2 · 2^{2/3})^{3/2} = 24√2
    >>> round(spectral_complexity([2 * torch.eye(2), 3 * torch.eye(2)]), 4)
    33.9411
    """
    A = _matrices(weights)
    M = [torch.zeros_like(W) for W in A] if references is None else _matrices(references)
    rho = [1.0] * len(A) if lipschitz is None else list(lipschitz)
    if len(M) != len(A) or len(rho) != len(A) or any(m.shape != a.shape for m, a in zip(M, A)):
        raise ShapeError("references and lipschitz need one entry per layer, of the layer's shape")
    spectral = [float(torch.linalg.matrix_norm(W, 2)) for W in A]
    rows = [float((W - W0).norm(dim=1).sum()) for W, W0 in zip(A, M)]
    product = math.prod(r * s for r, s in zip(rho, spectral))
    return product * sum((b / s) ** (2 / 3) for b, s in zip(rows, spectral)) ** 1.5


def bartlett_bound(weights: Sequence[torch.Tensor], X: torch.Tensor, gamma: float, *,
                   margin_risk: float, delta: float, references=None, lipschitz=None) -> float:
    """The spectrally-normalized margin bound of Bartlett, Foster, Telgarsky (2017).

    With probability ≥ 1 − δ over n i.i.d. samples, for networks whose spectral norms and
    (2,1) distances are at most those of ``weights`` (their Lemma A.8 / Theorem 3.3 form,
    with those norms as the class bounds; the fully uniform Theorem 1.1 adds logarithmic
    terms for a union bound over them, not included here):

        Pr[argmax_j f(x)_j ≠ y] ≤ R̂_γ(f) + 8/n + 72 ‖X‖_F ln(2W) ln(n) R_A / (γ n)
                                  + 3 √(ln(1/δ) / (2n)),

    where ``R̂_γ`` is the fraction of samples with margin ≤ γ (``margin_risk``), ``‖X‖_F``
    the Frobenius norm of the data matrix (n, d), ``W`` the largest layer width, and
    ``R_A`` the :func:`spectral_complexity`.

    References
    ----------
    P. L. Bartlett, D. J. Foster, M. Telgarsky, "Spectrally-normalized margin bounds for
    neural networks", NeurIPS 2017 (arXiv:1706.08498, Lemma A.8).

    Examples
    --------
    >>> import torch
    >>> # R_A = 2, ‖X‖_F = √8, n = 4, W = 2: 8/4 + 72·√8·ln4·ln4·2/4 + 3√(ln2/8)
    >>> round(bartlett_bound([torch.eye(2)], torch.ones(4, 2), 1.0, margin_risk=0.0, delta=0.5), 4)
    198.5685
    """
    _check_probability(delta)
    if not gamma > 0:
        raise UserError(f"gamma must be positive, got {gamma!r}")
    A = _matrices(weights)
    n = X.shape[0]
    width = max(max(W.shape) for W in A)
    complexity = spectral_complexity(weights, references, lipschitz)
    x_norm = float(X.detach().double().norm())
    return (margin_risk + 8 / n + 72 * x_norm * math.log(2 * width) * math.log(n) * complexity / (gamma * n)
            + 3 * math.sqrt(math.log(1 / delta) / (2 * n)))


def golowich_rademacher(weights: Sequence[torch.Tensor], input_norm: float, n: int) -> float:
    """``B (√(2 d ln 2) + 1) ∏_j ‖W_j‖_F / √n``: Golowich, Rakhlin, Shamir (2018), Theorem 1.

    A bound on the Rademacher complexity of depth-``d`` networks with 1-Lipschitz,
    positively homogeneous activations, ``‖W_j‖_F`` at most the given ones and inputs of
    norm at most ``B`` (``input_norm``), on ``n`` samples; the √d dependence replaces the
    2^d of earlier Frobenius bounds. With :func:`margin_bound` it gives
    ``√d ∏‖W_j‖_F / (γ √n)`` with the constants of both theorems.

    References
    ----------
    N. Golowich, A. Rakhlin, O. Shamir, "Size-independent sample complexity of neural
    networks", COLT 2018.

    Examples
    --------
    >>> import torch
    >>> round(golowich_rademacher([torch.eye(2)], 1.0, 4), 4)   # √2 (√(2 ln 2) + 1) / 2
    1.5397
    """
    A = _matrices(weights)
    if not n >= 1 or not input_norm >= 0:
        raise UserError("n must be ≥ 1 and input_norm ≥ 0")
    depth = len(A)
    frobenius = math.prod(float(W.norm()) for W in A)
    return input_norm * (math.sqrt(2 * depth * math.log(2)) + 1) * frobenius / math.sqrt(n)


def neyshabur_two_layer_rademacher(U: torch.Tensor, V: torch.Tensor, U0: torch.Tensor, X: torch.Tensor,
                                   gamma: float) -> float:
    """The width-decreasing Rademacher bound of Neyshabur, Li, Bhojanapalli, LeCun, Srebro (2019).

    For ``f(x) = V relu(U x)`` with ``c`` outputs, hidden units ``j = 1..h``, the class with
    ``‖v_j‖ ≤ α_j`` (columns of V) and ``‖u_j − u_j⁰‖ ≤ β_j`` (rows of U, ``U0`` the
    initialization) has, on the data matrix ``X`` (m, d), ramp-loss Rademacher complexity
    at most (their Theorem 1)

        (2√(2c) + 2) / (γ m) · Σ_j α_j (β_j ‖X‖_F + ‖u_j⁰‖ ‖X‖_2),

    evaluated here with ``α_j, β_j`` equal to the network's own norms. For trained wide
    networks the sum decreases with h (Fig. 3 of the paper). Their Theorem 2, the
    generalization bound, adds terms logarithmic in the α, β, omitted here.

    References
    ----------
    B. Neyshabur, Z. Li, S. Bhojanapalli, Y. LeCun, N. Srebro, "The role of
    over-parametrization in generalization of neural networks", ICLR 2019.

    Examples
    --------
    >>> import torch
    >>> U0 = torch.tensor([[1.0, 0.0]])
    >>> round(neyshabur_two_layer_rademacher(U0, torch.tensor([[2.0]]), U0, torch.eye(2), 1.0), 4)
    4.8284
    """
    if U.dim() != 2 or V.dim() != 2 or U.shape != U0.shape or V.shape[1] != U.shape[0]:
        raise ShapeError("need U (h, d), U0 (h, d) and V (c, h)")
    if not gamma > 0:
        raise UserError(f"gamma must be positive, got {gamma!r}")
    U, V, U0, X = (t.detach().double() for t in (U, V, U0, X))
    c, m = V.shape[0], X.shape[0]
    alpha = V.norm(dim=0)
    beta = (U - U0).norm(dim=1)
    total = (alpha * (beta * X.norm() + U0.norm(dim=1) * torch.linalg.matrix_norm(X, 2))).sum()
    return float((2 * math.sqrt(2 * c) + 2) / (gamma * m) * total)


def path_norm(weights: Sequence[torch.Tensor], p: float = 2.0) -> float:
    """The ℓp path norm ``(Σ_paths ∏_{edges} |w_e|^p)^{1/p} = (1ᵀ|W_L|^p ⋯ |W_1|^p 1)^{1/p}``.

    Invariant to the rescalings of ReLU units that leave the function unchanged; the
    capacity measure of Neyshabur, Tomioka, Srebro (2015), Definition 3 (bias-free layers).

    References
    ----------
    B. Neyshabur, R. Tomioka, N. Srebro, "Norm-based capacity control in neural
    networks", COLT 2015.

    Examples
    --------
    >>> import torch
    >>> path_norm([torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0]])], p=1)   # 3·1 + 3·2
    9.0
    """
    if not p > 0:
        raise UserError(f"p must be positive, got {p!r}")
    A = _matrices(weights)
    flow = torch.ones(A[0].shape[1], dtype=torch.float64, device=A[0].device)
    for W in A:
        flow = W.abs().pow(p) @ flow
    return float(flow.sum() ** (1 / p))


def margin_bound(margin_risk: float, rademacher: float, gamma: float, n: int, delta: float) -> float:
    """``R̂_γ + (2/γ) 𝔑_n + 3 √(ln(2/δ) / (2n))``: the binary margin bound of Mohri,
    Rostamizadeh, Talwalkar (2018), Theorem 5.8, for a class of Rademacher complexity
    ``𝔑_n`` (e.g. :func:`golowich_rademacher`), holding with probability ≥ 1 − δ.

    References
    ----------
    M. Mohri, A. Rostamizadeh, A. Talwalkar, "Foundations of Machine Learning", 2nd ed.,
    MIT Press 2018, Theorem 5.8.

    Examples
    --------
    >>> round(margin_bound(0.1, 0.5, 2.0, 100, 0.1), 4)   # 0.1 + 2·0.5/2 + 3√(ln 20 / 200)
    0.9672
    """
    _check_probability(delta)
    if not gamma > 0 or not n >= 1:
        raise UserError("gamma must be positive and n ≥ 1")
    return margin_risk + 2 * rademacher / gamma + 3 * math.sqrt(math.log(2 / delta) / (2 * n))


def gaussian_kl(mean_q: Params, sigma_q: float, mean_p: Params, sigma_p: float) -> float:
    """``KL(N(μ_q, σ_q² I) ‖ N(μ_p, σ_p² I))`` over all ``P`` parameters:
    ``½ [P σ_q²/σ_p² + ‖μ_q − μ_p‖²/σ_p² − P + 2P ln(σ_p/σ_q)]``.

    Examples
    --------
    >>> import torch
    >>> gaussian_kl(torch.ones(2), 1.0, torch.zeros(2), 1.0)
    1.0
    """
    if not sigma_q > 0 or not sigma_p > 0:
        raise UserError("sigma_q and sigma_p must be positive")
    layout = _Layout(mean_q)
    mq, mp = layout.flatten(mean_q).detach().double(), layout.flatten(mean_p).detach().double()
    P = layout.numel
    ratio = (sigma_q / sigma_p) ** 2
    return 0.5 * (P * ratio + float((mq - mp).square().sum()) / sigma_p ** 2 - P - P * math.log(ratio))


def _binary_kl(q: float, p: float) -> float:
    eps = 1e-15
    q, p = min(max(q, 0.0), 1.0), min(max(p, eps), 1 - eps)
    return (q * math.log(q / p) if q > 0 else 0.0) + ((1 - q) * math.log((1 - q) / (1 - p)) if q < 1 else 0.0)


def pac_bayes_bound(empirical_risk: float, kl: float, n: int, delta: float) -> float:
    """The PAC-Bayes bound on the Gibbs risk used by Dziugaite & Roy (2017), eq. (4)-(5).

    With probability ≥ 1 − δ, for every posterior Q and a prior P fixed before seeing the
    data, ``kl(R̂(Q) ‖ R(Q)) ≤ (KL(Q‖P) + ln(2√n/δ)) / n`` (Langford–Seeger / Maurer 2004),
    with ``kl`` the Bernoulli KL; the bound returned is the largest ``R(Q)`` allowed,
    found by bisection. It is at most the McAllester form ``R̂ + √((KL + ln(2√n/δ)) / (2n))``
    by Pinsker's inequality. For a sharpness bound (Neyshabur et al. 2017) take
    ``Q = N(θ, σ²I)``, ``P = N(θ₀, σ²I)``, :func:`gaussian_kl` and :func:`perturbed_risk`.

    References
    ----------
    G. K. Dziugaite, D. M. Roy, "Computing nonvacuous generalization bounds for deep
    (stochastic) neural networks with many more parameters than training data", UAI 2017.
    B. Neyshabur, S. Bhojanapalli, D. McAllester, N. Srebro, "Exploring generalization in
    deep learning", NeurIPS 2017.
    A. Maurer, "A note on the PAC Bayesian theorem", arXiv:cs/0411099, 2004.

    Examples
    --------
    >>> round(pac_bayes_bound(0.0, 0.0, 100, 0.05), 4)   # kl(0‖R) = −ln(1−R) = ln(2·10/0.05)/100
    0.0582
    """
    _check_probability(delta)
    if not 0 <= empirical_risk <= 1 or not kl >= 0 or not n >= 1:
        raise UserError("need empirical_risk in [0, 1], kl ≥ 0 and n ≥ 1")
    budget = (kl + math.log(2 * math.sqrt(n) / delta)) / n
    lo, hi = empirical_risk, 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _binary_kl(empirical_risk, mid) <= budget else (lo, mid)
    return hi


def perturbed_risk(risk: Callable[[Params], torch.Tensor], params: Params, sigma: float, *,
                   samples: int, generator: torch.Generator) -> float:
    """Monte-Carlo ``E_{ξ~N(0,I)}[risk(θ + σ ξ)]``, the empirical Gibbs risk of
    ``Q = N(θ, σ²I)`` in :func:`pac_bayes_bound` (``params`` are not modified).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> perturbed_risk(lambda w: (w > 10).double().mean(), torch.zeros(3), 0.1, samples=4, generator=g)
    0.0
    """
    if not sigma >= 0 or not isinstance(samples, int) or samples < 1:
        raise UserError("sigma must be ≥ 0 and samples a positive integer")
    layout = _Layout(params)
    theta = layout.flatten(params).detach()
    total = 0.0
    with torch.no_grad():
        for _ in range(samples):
            noise = torch.randn(layout.numel, generator=generator, dtype=theta.dtype, device=generator.device)
            total += float(risk(layout.unflatten(theta + sigma * noise.to(theta.device))))
    return total / samples
