"""Planar data for the infinite-width ReLU claims: points on the circle and a ReLU teacher."""

from __future__ import annotations

import math

import torch


def unit(angle: torch.Tensor) -> torch.Tensor:
    """u(φ) = (cos φ, sin φ), stacked on a last axis."""
    return torch.stack([torch.cos(angle), torch.sin(angle)], -1)


def teacher(X: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Σ_j (−1)^j relu(u(φ₀ + 2πj/k)ᵀx) at the rows of X, φ₀ uniform (one draw).

    k is odd, so no two units are antipodal (a pair relu(uᵀx) − relu(−uᵀx) = uᵀx would
    collapse to one linear piece): the teacher has 2k kinks on the circle, and a net of two
    directions (four kinks) cannot fit it.
    """
    offset = 2 * math.pi * torch.rand(1, generator=generator, dtype=X.dtype, device=X.device)
    angles = offset + 2 * math.pi / k * torch.arange(k, dtype=X.dtype, device=X.device)
    signs = (-1.0) ** torch.arange(k, dtype=X.dtype, device=X.device)
    return torch.relu(X @ unit(angles).T) @ signs
