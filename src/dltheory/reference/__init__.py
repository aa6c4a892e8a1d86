"""Reference solvers (cvxpy): the answers theorems predict, with certified optimality."""

from dltheory.reference.bregman import BregmanSolution, min_bregman_interpolation
from dltheory.reference.homogeneous import KKTResidual, homogeneous_kkt_residual
from dltheory.reference.nuclear import (
    NuclearNormSolution,
    PCPSolution,
    min_nuclear_norm,
    min_nuclear_norm_completion,
    principal_component_pursuit,
)
from dltheory.reference.relu_measure import (
    ReluLassoSolution,
    ReluMarginSolution,
    relu_dictionary,
    relu_lasso,
    relu_max_margin,
)
from dltheory.reference.svm import MaxMarginSolution, max_margin

__all__ = [
    "BregmanSolution",
    "KKTResidual",
    "MaxMarginSolution",
    "NuclearNormSolution",
    "PCPSolution",
    "principal_component_pursuit",
    "homogeneous_kkt_residual",
    "max_margin",
    "min_bregman_interpolation",
    "min_nuclear_norm",
    "min_nuclear_norm_completion",
    "ReluLassoSolution",
    "ReluMarginSolution",
    "relu_dictionary",
    "relu_lasso",
    "relu_max_margin",
]

from dltheory.reference.fourier import fourier_l1, fourier_max_margin  # noqa: E402

__all__ += ["fourier_l1", "fourier_max_margin"]
