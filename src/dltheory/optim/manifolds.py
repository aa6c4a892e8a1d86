"""Embedded matrix manifolds with tangent projections and retractions.

A :class:`Manifold` gives the three operations Riemannian gradient descent needs for a
submanifold of Euclidean space with the induced metric: the orthogonal projection onto the
tangent space (which maps the Euclidean gradient to the Riemannian one), a retraction, and
a projection of an arbitrary point onto the manifold (for initialization).

References
----------
Absil, Mahony, Sepulchre, "Optimization Algorithms on Matrix Manifolds", Princeton 2008
(§3.6 tangent projections, §4.1 retractions, eq. 4.8 the QR retraction on the Stiefel
manifold).
Boumal, "An Introduction to Optimization on Smooth Manifolds", Cambridge 2023.
"""

from __future__ import annotations

import torch


class Manifold:
    """Interface: :meth:`project`, :meth:`tangent`, :meth:`retract`, :meth:`residual`."""

    name = "manifold"

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """A point of the manifold near ``x`` (the nearest one where that is cheap)."""
        raise NotImplementedError

    def tangent(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The orthogonal projection of ``g`` onto the tangent space at ``x``."""
        raise NotImplementedError

    def retract(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``R_x(v)``: a point of the manifold, ``R_x(v) = x + v + O(‖v‖²)``."""
        raise NotImplementedError

    def residual(self, x: torch.Tensor) -> float:
        """How far ``x`` is from satisfying the manifold's equations (0 on the manifold)."""
        raise NotImplementedError

    def random(self, shape, *, generator: torch.Generator, dtype=torch.float64, device="cpu") -> torch.Tensor:
        """A random point: the projection of a standard Gaussian tensor."""
        return self.project(torch.randn(shape, generator=generator, dtype=dtype, device=device))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Sphere(Manifold):
    r"""The unit sphere ``{x : ‖x‖_F = 1}`` of a tensor of any shape.

    Tangent projection ``g − ⟨x, g⟩x``; retraction ``(x + v)/‖x + v‖``.
    """

    name = "sphere"

    def project(self, x):
        return x / torch.linalg.vector_norm(x)

    def tangent(self, x, g):
        return g - (x * g).sum() * x

    def retract(self, x, v):
        return self.project(x + v)

    def residual(self, x):
        return abs(float(torch.linalg.vector_norm(x)) - 1.0)


class Oblique(Manifold):
    r"""Matrices whose rows have unit norm: ``{X : ‖X_{i,:}‖ = 1 for all i}``.

    A product of spheres, one per row (the unit vectors v_i of a Burer–Monteiro
    factorization ``X = V Vᵀ`` with ``diag X = 1``). Norms are taken over the last dimension,
    so a 1-d tensor is a point of the sphere.
    """

    name = "oblique"

    def project(self, x):
        return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)

    def tangent(self, x, g):
        return g - (x * g).sum(dim=-1, keepdim=True) * x

    def retract(self, x, v):
        return self.project(x + v)

    def residual(self, x):
        return float((torch.linalg.vector_norm(x, dim=-1) - 1).abs().max())


class Stiefel(Manifold):
    r"""``{X ∈ ℝ^{n×p} : XᵀX = I_p}`` (n ≥ p), orthonormal columns.

    Tangent projection ``G − X sym(XᵀG)``; QR retraction ``R_X(V) = qf(X + V)``, the Q
    factor with the signs that make diag(R) positive (Absil et al. 2008, eq. 4.8);
    :meth:`project` is the polar factor ``U Vᵀ`` of the SVD, the nearest point in Frobenius
    norm.
    """

    name = "stiefel"

    def project(self, x):
        u, _, vh = torch.linalg.svd(x, full_matrices=False)
        return u @ vh

    def tangent(self, x, g):
        xtg = x.mT @ g
        return g - x @ (0.5 * (xtg + xtg.mT))

    def retract(self, x, v):
        q, r = torch.linalg.qr(x + v)
        signs = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
        signs = torch.where(signs == 0, torch.ones_like(signs), signs)
        return q * signs.unsqueeze(-2)

    def residual(self, x):
        if x.dim() != 2 or x.shape[0] < x.shape[1]:
            return float("inf")
        eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
        return float((x.mT @ x - eye).abs().max())


_MANIFOLDS = {"sphere": Sphere, "oblique": Oblique, "stiefel": Stiefel}


def make_manifold(manifold) -> Manifold:
    """A :class:`Manifold` from its name (``"sphere"``, ``"oblique"``, ``"stiefel"``) or itself."""
    if isinstance(manifold, Manifold):
        return manifold
    if manifold not in _MANIFOLDS:
        raise ValueError(f"Invalid manifold: {manifold!r} (use one of {sorted(_MANIFOLDS)} or a Manifold)")
    return _MANIFOLDS[manifold]()
