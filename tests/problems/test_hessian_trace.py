"""Closed-form Hessian traces equal the trace of the dense float64 Hessian (torch.func.hessian)."""

import pytest
import torch
from torch.func import hessian

from dltheory.problems import (
    AsymmetricMatrixSensing,
    CovarianceEstimation,
    FactoredRobustPCA,
    MatrixSensing,
    QuadraticNetwork,
    RobustPCA,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


PROBLEMS = {
    "sensing": lambda g: MatrixSensing(5, 2, 30, width=4, generator=g),
    "asymmetric-sensing": lambda g: AsymmetricMatrixSensing(4, 3, 2, 25, width=3, generator=g),
    "asymmetric-sensing-unbalanced": lambda g: AsymmetricMatrixSensing(4, 3, 2, 25, width=3, balance=0.0,
                                                                       generator=g),
    "covariance": lambda g: CovarianceEstimation(5, 2, 30, width=3, generator=g),
    "quadratic-net": lambda g: QuadraticNetwork(5, 2, 3, 30, generator=g),
    "robust-pca": lambda g: RobustPCA(5, 2, 0.2, width=3, generator=g),
    "factored-robust-pca": lambda g: FactoredRobustPCA(5, 4, 2, 0.2, width=3, generator=g),
}


def _dense_hessian_trace(loss, params) -> float:
    if not isinstance(params, dict):
        return float(torch.trace(hessian(loss)(params).reshape(params.numel(), params.numel())))
    names = list(params)
    blocks = hessian(loss)(params)
    return float(sum(torch.trace(blocks[k][k].reshape(params[k].numel(), params[k].numel())) for k in names))


@pytest.mark.parametrize("name", PROBLEMS)
@pytest.mark.parametrize("scale", [0.3, 1.0, 3.0])
def test_closed_form_trace_equals_dense_hessian_trace(name, scale):
    problem = PROBLEMS[name](_gen())
    params = problem.init(_gen(1), scale=scale)
    exact = _dense_hessian_trace(problem.loss, params)
    assert float(problem.hessian_trace(params)) == pytest.approx(exact, rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("name", ["sensing", "asymmetric-sensing", "covariance", "quadratic-net",
                                  "factored-robust-pca"])
def test_trace_is_differentiable_and_its_gradient_matches_finite_differences(name):
    problem = PROBLEMS[name](_gen())
    params = problem.init(_gen(2))
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()} if isinstance(params, dict) \
        else params.clone().requires_grad_()
    flat = list(leaves.values()) if isinstance(leaves, dict) else [leaves]
    grads = torch.autograd.grad(problem.hessian_trace(leaves), flat)
    direction = [torch.randn(x.shape, generator=_gen(3), dtype=x.dtype) for x in flat]

    def shifted(t):
        moved = [x.detach() + t * d for x, d in zip(flat, direction)]
        return dict(zip(leaves, moved)) if isinstance(leaves, dict) else moved[0]

    h = 1e-6
    numeric = (float(problem.hessian_trace(shifted(h))) - float(problem.hessian_trace(shifted(-h)))) / (2 * h)
    analytic = float(sum((g * d).sum() for g, d in zip(grads, direction)))
    assert analytic == pytest.approx(numeric, rel=1e-6)


def test_at_the_ground_truth_only_the_weighted_trace_term_remains():
    problem = MatrixSensing(6, 2, 40, width=3, generator=_gen())
    U = problem.ground_truth
    weight, _ = problem._curvature
    assert float(problem.hessian_trace(U)) == pytest.approx(float((weight * (U @ U.mT)).sum()), rel=1e-12)


def test_robust_pca_trace_is_piecewise_constant_with_zero_gradient():
    problem = RobustPCA(5, 2, 0.2, width=3, generator=_gen())
    U = problem.init(_gen(1)).requires_grad_()
    (grad,) = torch.autograd.grad(problem.hessian_trace(U), U, allow_unused=True, materialize_grads=True)
    assert torch.count_nonzero(grad) == 0


def test_factored_robust_pca_ground_truth_is_the_flattest_factorization_of_the_truth():
    # min over factorizations of (M*, S*): 2(√(n1n2)‖M*‖_* + c‖S*‖₁)/(n1n2), attained by ground_truth;
    # rebalancing L ↦ Lt, R ↦ R/t or P ↦ Pt, Q ↦ Q/t keeps the point and raises the trace
    problem = FactoredRobustPCA(6, 4, 1, 0.2, generator=_gen())
    truth = problem.ground_truth
    assert float(problem.loss(truth)) <= 1e-30
    n1, n2, c = problem.n1, problem.n2, problem.c
    nuclear = float(torch.linalg.matrix_norm(problem.M_star, ord="nuc"))
    bound = 2 * ((n1 * n2) ** 0.5 * nuclear + c * float(problem.S_star.abs().sum())) / (n1 * n2)
    assert float(problem.hessian_trace(truth)) == pytest.approx(bound, rel=1e-12)
    for t in (0.5, 2.0):
        for a, b in (("L", "R"), ("P", "Q")):
            moved = {**truth, a: truth[a] * t, b: truth[b] / t}
            assert float(problem.loss(moved)) <= 1e-30
            assert float(problem.hessian_trace(moved)) > float(problem.hessian_trace(truth))


def test_factored_robust_pca_flattest_interpolant_is_principal_component_pursuit():
    # the augmented-Lagrangian flattest interpolant equals cvxpy's PCP split, and recovers M*
    import numpy as np

    from dltheory.claims._flat_minima import flattest_minimizer
    from dltheory.reference import principal_component_pursuit

    gen = _gen(4)
    problem = FactoredRobustPCA(8, 8, 1, 0.05, generator=gen)
    flat = flattest_minimizer(problem, problem.init(gen, scale=0.1), 150)
    pcp = principal_component_pursuit(problem.M, problem.weight)
    X = problem.low_rank(flat).numpy()
    assert np.linalg.norm(X - pcp.X) <= 1e-6 * np.linalg.norm(pcp.X)
    assert problem.recovery_error(flat) <= 1e-6
    n = problem.n1
    pcp_trace = 2 * (n * pcp.objective) / n ** 2  # λ = c/n: √(n1n2)(‖X‖_* + λ‖S‖₁) = n·objective
    assert float(problem.hessian_trace(flat)) == pytest.approx(pcp_trace, rel=1e-6)


def test_factored_robust_pca_bad_input_is_a_config_error():
    from dltheory.errors import ConfigError, ShapeError

    with pytest.raises(ConfigError, match="corruption"):
        FactoredRobustPCA(4, 4, 1, 1.5, generator=_gen())
    with pytest.raises(ConfigError, match="weight"):
        FactoredRobustPCA(4, 4, 1, 0.1, weight=-1.0, generator=_gen())
    with pytest.raises(ConfigError, match="rank <= width"):
        FactoredRobustPCA(4, 4, 3, 0.1, width=2, generator=_gen())
    problem = FactoredRobustPCA(4, 4, 1, 0.1, generator=_gen())
    with pytest.raises(ConfigError, match="keys"):
        problem.loss({"L": torch.zeros(4, 4)})
    with pytest.raises(ShapeError):
        problem.loss({**problem.ground_truth, "P": torch.zeros(3, 4, dtype=torch.float64)})
