"""Non-convex problems with known ground truth, behind one small interface.

Every problem is a :class:`Problem`: ``loss(params)``, ``init(generator, scale)``,
``ground_truth``, ``global_min_value``, ``recovery_error(params)`` (up to the problem's
symmetry), ``success(params)`` and ``manifold``. Instances are drawn from an explicit
``torch.Generator`` and take ``dtype``/``device``.
"""

from dltheory.problems.base import Problem
from dltheory.problems.completion import MatrixCompletion, RobustPCA
from dltheory.problems.deep_sensing import DeepMatrixSensing
from dltheory.problems.dictionary_learning import DictionaryLearning
from dltheory.problems.landscape_design import ReLULandscapeDesign, ReLUSquareLoss
from dltheory.problems.low_rank_approximation import LowRankApproximation
from dltheory.problems.maxcut import MaxCutBurerMonteiro
from dltheory.problems.phase_retrieval import PhaseRetrieval
from dltheory.problems.robust_pca import FactoredRobustPCA
from dltheory.problems.saddle import StrictSaddle
from dltheory.problems.sensing import (
    AsymmetricMatrixSensing,
    CovarianceEstimation,
    MatrixSensing,
    QuadraticNetwork,
)
from dltheory.problems.tensor_decomposition import OrthogonalTensorDecomposition

__all__ = [
    "AsymmetricMatrixSensing",
    "CovarianceEstimation",
    "DeepMatrixSensing",
    "DictionaryLearning",
    "LowRankApproximation",
    "MatrixCompletion",
    "MatrixSensing",
    "MaxCutBurerMonteiro",
    "OrthogonalTensorDecomposition",
    "PhaseRetrieval",
    "Problem",
    "QuadraticNetwork",
    "ReLULandscapeDesign",
    "ReLUSquareLoss",
    "RobustPCA",
    "FactoredRobustPCA",
    "StrictSaddle",
]
