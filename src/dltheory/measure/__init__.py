"""Measurements of deep-learning theory on anyone's model: curvature, margins, bounds,
lazy training, norms. Every measure is a function of ``loss(params)`` or of tensors and
never mutates its inputs."""

from dltheory.measure.functional import ModelLoss, model_loss
from dltheory.measure.hessian import (
    Estimate,
    HessianOperator,
    SpectralDensity,
    batched_hvp,
    hessian_diagonal,
    hessian_eigs,
    hessian_trace,
    hvp,
    spectral_density,
)

__all__ = [
    "Estimate",
    "HessianOperator",
    "ModelLoss",
    "SpectralDensity",
    "batched_hvp",
    "hessian_diagonal",
    "hessian_eigs",
    "hessian_trace",
    "hvp",
    "model_loss",
    "spectral_density",
]
