"""Measurements of deep-learning theory on anyone's model: curvature, margins, lazy
training, norms, generalization bounds. Every measure is a function of ``loss(params)``
(DESIGN.md's functional form; :func:`model_loss` builds it from an ``nn.Module``) or of
tensors, and never mutates its inputs."""

from dltheory.measure.bounds import (
    bartlett_bound,
    gaussian_kl,
    golowich_rademacher,
    margin_bound,
    neyshabur_two_layer_rademacher,
    pac_bayes_bound,
    path_norm,
    perturbed_risk,
    spectral_complexity,
)
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
from dltheory.measure.lazy import (
    Distance,
    distance_from_init,
    empirical_ntk,
    max_neuron_movement,
    relu_ntk_gram_infinite_width,
)
from dltheory.measure.margin import margin_distribution, margins, normalized_margin
from dltheory.measure.norms import (
    bregman_divergence,
    effective_rank,
    fourier_norm,
    nuclear_norm,
    schatten_norm,
    stable_rank,
)
from dltheory.measure.stationarity import goldstein_gap, goldstein_gaps, min_norm_in_hull

__all__ = [
    "Distance",
    "Estimate",
    "HessianOperator",
    "ModelLoss",
    "SpectralDensity",
    "bartlett_bound",
    "batched_hvp",
    "bregman_divergence",
    "distance_from_init",
    "effective_rank",
    "empirical_ntk",
    "fourier_norm",
    "gaussian_kl",
    "goldstein_gap",
    "goldstein_gaps",
    "golowich_rademacher",
    "hessian_diagonal",
    "hessian_eigs",
    "hessian_trace",
    "hvp",
    "margin_bound",
    "margin_distribution",
    "margins",
    "max_neuron_movement",
    "min_norm_in_hull",
    "model_loss",
    "neyshabur_two_layer_rademacher",
    "normalized_margin",
    "nuclear_norm",
    "pac_bayes_bound",
    "path_norm",
    "perturbed_risk",
    "relu_ntk_gram_infinite_width",
    "schatten_norm",
    "spectral_complexity",
    "spectral_density",
    "stable_rank",
]
