"""Optimizers from the theory, as ``torch.optim.Optimizer`` subclasses.

Each class writes its update rule in its docstring and cites the paper; arguments are
validated up front (``ValueError`` naming the bad value); ``step(closure=None)`` follows
the ``torch.optim`` protocol, so they drop into any training loop. All randomness comes
from an explicit ``torch.Generator``. :func:`minimize` runs any of them on a functional
loss ``loss(params)``.
"""

from dltheory.optim.admm import ADMM
from dltheory.optim.coordinate_descent import CoordinateDescent
from dltheory.optim.driver import MinimizeResult, minimize
from dltheory.optim.gd import GD
from dltheory.optim.label_noise import LabelNoise
from dltheory.optim.langevin import NoisyGD
from dltheory.optim.manifolds import Manifold, Oblique, Sphere, Stiefel, make_manifold
from dltheory.optim.mirror_descent import (
    Entropy,
    Euclidean,
    HyperbolicEntropy,
    LpPotential,
    MirrorDescent,
    Potential,
    make_potential,
)
from dltheory.optim.perturbed_gd import PerturbedGD, jin2017_parameters
from dltheory.optim.riemannian import RiemannianGD
from dltheory.optim.sam import SAM
from dltheory.optim.steepest_descent import SteepestDescent, steepest_direction

__all__ = [
    "ADMM",
    "CoordinateDescent",
    "Entropy",
    "Euclidean",
    "GD",
    "HyperbolicEntropy",
    "LabelNoise",
    "LpPotential",
    "Manifold",
    "MinimizeResult",
    "MirrorDescent",
    "NoisyGD",
    "Oblique",
    "PerturbedGD",
    "Potential",
    "RiemannianGD",
    "SAM",
    "Sphere",
    "SteepestDescent",
    "Stiefel",
    "jin2017_parameters",
    "make_manifold",
    "make_potential",
    "minimize",
    "steepest_direction",
]
