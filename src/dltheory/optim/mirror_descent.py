"""Mirror descent and its potentials (mirror maps)."""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from dltheory.optim._common import _check_nonnegative, _check_positive, _evaluate


class Potential:
    r"""A strictly convex, differentiable potential ψ, applied entrywise and summed.

    Subclasses give :meth:`value` (ψ(w)), :meth:`mirror_map` (∇ψ) and
    :meth:`inverse_mirror_map` ((∇ψ)⁻¹ = ∇ψ*); :meth:`domain_error` says when ``w`` lies
    outside dom ψ, and :meth:`project_simplex` is the Bregman projection onto the
    probability simplex where it has a closed form.
    """

    name = "potential"

    def value(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def mirror_map(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def inverse_mirror_map(self, theta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def domain_error(self, w: torch.Tensor) -> str | None:
        """A message if ``w`` is outside the domain of ψ, else None."""
        return None

    def project_simplex(self, w: torch.Tensor) -> torch.Tensor:
        """``argmin_{v ∈ Δ} D_ψ(v, w)`` over the simplex ``Δ = {v ≥ 0, Σ v = 1}``."""
        raise NotImplementedError(f"no closed-form Bregman projection onto the simplex for {self.name}")

    def bregman(self, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        r"""``D_ψ(w, v) = ψ(w) − ψ(v) − ⟨∇ψ(v), w − v⟩``."""
        return self.value(w) - self.value(v) - (self.mirror_map(v) * (w - v)).sum()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Entropy(Potential):
    r"""Negative entropy ``ψ(w) = Σ w_i log w_i − w_i`` on the positive orthant.

    ∇ψ = log, so mirror descent is exponentiated gradient ``w₊ = w ⊙ exp(−η∇L)``; the Bregman
    divergence is the (unnormalized) KL divergence and the projection onto the simplex is
    normalization.
    """

    name = "entropy"

    def value(self, w):
        return (torch.special.xlogy(w, w) - w).sum()

    def mirror_map(self, w):
        return torch.log(w)

    def inverse_mirror_map(self, theta):
        return torch.exp(theta)

    def domain_error(self, w):
        return None if bool((w > 0).all()) else "the entropy potential needs every entry > 0"

    def project_simplex(self, w):
        return w / w.sum()


class Euclidean(Potential):
    r"""``ψ(w) = ½‖w‖²``: mirror descent is gradient descent, the projection is Euclidean."""

    name = "l2"

    def value(self, w):
        return 0.5 * (w * w).sum()

    def mirror_map(self, w):
        return w

    def inverse_mirror_map(self, theta):
        return theta

    def project_simplex(self, w):
        # sort-based Euclidean projection (Duchi et al. 2008, Fig. 1)
        flat = w.reshape(-1)
        mu, _ = torch.sort(flat, descending=True)
        cumulative = torch.cumsum(mu, 0) - 1
        index = torch.arange(1, flat.numel() + 1, dtype=w.dtype, device=w.device)
        k = int(torch.nonzero(mu - cumulative / index > 0).max())
        return torch.clamp(w - cumulative[k] / (k + 1), min=0)


class LpPotential(Potential):
    r"""``ψ(w) = (1/p) Σ |w_i|^p`` for p > 1: ∇ψ(w) = sign(w)|w|^{p−1}, ∇ψ*(θ) = sign(θ)|θ|^{1/(p−1)}."""

    name = "lp"

    def __init__(self, p: float):
        if not (isinstance(p, (int, float)) and p > 1 and p != float("inf")):
            raise ValueError(f"Invalid p: {p} (the lp potential needs 1 < p < inf)")
        self.p = float(p)

    def value(self, w):
        return (w.abs() ** self.p).sum() / self.p

    def mirror_map(self, w):
        return torch.sign(w) * w.abs() ** (self.p - 1)

    def inverse_mirror_map(self, theta):
        return torch.sign(theta) * theta.abs() ** (1 / (self.p - 1))

    def __repr__(self):
        return f"LpPotential(p={self.p})"


class HyperbolicEntropy(Potential):
    r"""Hypentropy ``ψ_β(w) = Σ w_i arcsinh(w_i/β) − √(w_i² + β²)`` (Ghai, Hazan, Singer 2020).

    ∇ψ = arcsinh(·/β), ∇ψ* = β sinh: the update ``w₊ = β sinh(arcsinh(w/β) − η∇L)``
    interpolates between gradient descent (β → ∞) and exponentiated gradient on signed
    weights (β → 0), on all of ℝ^d.
    """

    name = "hypentropy"

    def __init__(self, beta: float = 1.0):
        _check_positive("beta", beta)
        self.beta = float(beta)

    def value(self, w):
        return (w * torch.asinh(w / self.beta) - torch.sqrt(w * w + self.beta ** 2)).sum()

    def mirror_map(self, w):
        return torch.asinh(w / self.beta)

    def inverse_mirror_map(self, theta):
        return self.beta * torch.sinh(theta)

    def __repr__(self):
        return f"HyperbolicEntropy(beta={self.beta})"


def make_potential(potential="entropy", *, p: float | None = None, beta: float | None = None) -> Potential:
    """A :class:`Potential` from its name (``"entropy"``, ``"l2"``, ``"lp"``, ``"hypentropy"``).

    ``p`` is required for ``"lp"``; ``beta`` (default 1) applies to ``"hypentropy"`` only. A
    Potential object is returned unchanged.
    """
    takes = {"lp": "p", "hypentropy": "beta"}
    name = potential if isinstance(potential, str) else None
    for option, value in (("p", p), ("beta", beta)):
        if value is not None and takes.get(name) != option:
            raise ValueError(f"Invalid {option}={value} for potential {potential!r}: only 'lp' takes p "
                             "and 'hypentropy' takes beta")
    if isinstance(potential, Potential):
        return potential
    if potential == "entropy":
        return Entropy()
    if potential == "l2":
        return Euclidean()
    if potential == "lp":
        if p is None:
            raise ValueError("Invalid p: None (the 'lp' potential needs p > 1)")
        return LpPotential(p)
    if potential == "hypentropy":
        return HyperbolicEntropy(1.0 if beta is None else beta)
    raise ValueError(f"Invalid potential: {potential!r} (use 'entropy', 'l2', 'lp', 'hypentropy' "
                     "or a Potential)")


class MirrorDescent(Optimizer):
    r"""Mirror descent with potential ψ (entrywise, summed over all entries).

    .. math:: \nabla\psi(w_{t+1}) = \nabla\psi(w_t) - \eta\, \nabla L(w_t)

    optionally followed by the Bregman projection onto the probability simplex (each
    parameter tensor is one point of its simplex). With ψ the negative entropy this is
    exponentiated gradient ``w₊ = w ⊙ exp(−η∇L)`` (normalized on the simplex). On
    under-determined least squares with small steps it converges to
    ``argmin {D_ψ(w, w₀) : Xw = y}`` (Gunasekar et al. 2018, Theorem 1).

    Parameters
    ----------
    params : iterable of tensors or parameter groups (each group may set its own potential).
    lr : step size η ≥ 0.
    potential : ``"entropy"``, ``"l2"``, ``"lp"``, ``"hypentropy"`` or a :class:`Potential`.
    p : exponent for ``"lp"`` (required there).
    beta : scale for ``"hypentropy"`` (default 1).
    simplex : keep each parameter tensor on the probability simplex (the initial point must
        be on it; only for potentials with a closed-form projection: entropy and l2).

    References
    ----------
    Nemirovski, Yudin, "Problem complexity and method efficiency in optimization", 1983.
    Beck, Teboulle, "Mirror descent and nonlinear projected subgradient methods for convex
    optimization", Oper. Res. Letters 2003.
    Gunasekar, Lee, Soudry, Srebro, "Characterizing implicit bias in terms of optimization
    geometry", ICML 2018.
    Ghai, Hazan, Singer, "Exponentiated gradient meets gradient descent", ALT 2020 (hypentropy).
    """

    def __init__(self, params, lr: float, potential="entropy", *, p: float | None = None,
                 beta: float | None = None, simplex: bool = False):
        _check_nonnegative("learning rate", lr)
        potential = make_potential(potential, p=p, beta=beta)
        if simplex and type(potential).project_simplex is Potential.project_simplex:
            raise ValueError(f"Invalid simplex=True for potential {potential!r}: no closed-form "
                             "Bregman projection (use 'entropy' or 'l2')")
        super().__init__(params, dict(lr=lr, potential=potential, simplex=simplex))
        for group in self.param_groups:
            for w in group["params"]:
                self._check_start(w, group)

    @staticmethod
    def _check_start(w: torch.Tensor, group: dict) -> None:
        message = group["potential"].domain_error(w.detach())
        if message is not None:
            raise ValueError(f"Invalid initial parameter: {message}")
        if group["simplex"]:
            total = float(w.detach().sum())
            if bool((w < 0).any()) or abs(total - 1) > 1e-6:
                raise ValueError(f"Invalid initial parameter: not on the simplex (sum {total}, "
                                 "entries must be >= 0)")

    @torch.no_grad()
    def step(self, closure=None):
        """One mirror step; ``closure`` (optional) re-evaluates loss and gradient."""
        loss = _evaluate(closure)
        for group in self.param_groups:
            psi = group["potential"]
            for w in group["params"]:
                if w.grad is None:
                    continue
                new = psi.inverse_mirror_map(psi.mirror_map(w) - group["lr"] * w.grad)
                w.copy_(psi.project_simplex(new) if group["simplex"] else new)
        return loss
