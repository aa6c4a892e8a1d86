"""Networks from the theory, each holding many seeds at once (a leading seed axis).

``TwoLayer`` (NTK 1/√m or mean-field 1/m scaling), ``QuadraticNet`` (σ(z) = z²), ``MLP``
and ``ResNet`` in the scaling of Du et al. 2019. Build one from a list of
``torch.Generator`` (one per seed): slice k equals the model built from ``[generators[k]]``.
"""

from dltheory.models._batched import (
    ACTIVATIONS,
    VECTOR_BLOCK,
    SeedBatched,
    c_sigma,
    seed_map,
    seed_matmul,
)
from dltheory.models.deep import MLP, ResNet
from dltheory.models.two_layer import QuadraticNet, TwoLayer

__all__ = ["ACTIVATIONS", "MLP", "QuadraticNet", "ResNet", "SeedBatched", "TwoLayer", "c_sigma",
           "seed_map", "seed_matmul", "VECTOR_BLOCK"]

from dltheory.models.convac import ConvAC, matricize  # noqa: E402
from dltheory.models.deep_linear import DeepLinear, preconditioned_gradient  # noqa: E402

__all__ += ["ConvAC", "DeepLinear", "matricize", "preconditioned_gradient"]
