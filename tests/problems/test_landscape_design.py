import math

import pytest
import torch
from scipy.integrate import quad

from dltheory.errors import ConfigError
from dltheory.problems.landscape_design import (
    ReLULandscapeDesign,
    ReLUSquareLoss,
    _arccos_kernel,
    hermite4_pairs,
    relu_hermite_coefficient,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 6])
def test_relu_hermite_coefficients_match_quadrature(n):
    he = {0: lambda z: 1.0, 1: lambda z: z, 2: lambda z: z * z - 1, 3: lambda z: z ** 3 - 3 * z,
          4: lambda z: z ** 4 - 6 * z * z + 3, 6: lambda z: z ** 6 - 15 * z ** 4 + 45 * z * z - 15}[n]
    value, _ = quad(lambda z: z * he(z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi), 0, math.inf)
    assert relu_hermite_coefficient(n) == pytest.approx(value / math.sqrt(math.factorial(n)), abs=1e-10)


def test_empirical_moment_is_the_sample_mean_of_the_hermite_pairs():
    # the d⁴ tensor contracted with b_j⊗b_j⊗b_k⊗b_k equals the mean of y·φ(b_j, b_k, x) (exact identity)
    problem = ReLULandscapeDesign(3, samples=2000, generator=_gen())
    x = torch.randn(2000, 3, generator=_gen(0), dtype=torch.float64)
    B = torch.randn(3, 3, generator=_gen(5), dtype=torch.float64)
    g = _gen()
    ReLULandscapeDesign(3, generator=g)  # replay the instance draws, then the samples
    x = torch.randn(2000, 3, generator=g, dtype=torch.float64)
    direct = (problem.labels(x)[:, None, None] * hermite4_pairs(B, B, x)).mean(0)
    torch.testing.assert_close(problem.pair_moments(B), direct, rtol=1e-10, atol=1e-12)


def test_population_closed_form_is_the_expectation_of_the_hermite_estimator():
    # E[y·φ(b_j, b_k, x)] = σ̂₄ Σ_i a_i*⟨b_i*, b_j⟩²⟨b_i*, b_k⟩²: within 5 standard errors of 20 batches
    problem = ReLULandscapeDesign(3, generator=_gen(1))
    B = torch.randn(3, 3, generator=_gen(7), dtype=torch.float64) / math.sqrt(3)
    g = _gen(11)
    batches = []
    for _ in range(20):
        x = torch.randn(100_000, 3, generator=g, dtype=torch.float64)
        batches.append((problem.labels(x)[:, None, None] * hermite4_pairs(B, B, x)).mean(0))
    batches = torch.stack(batches)
    error = batches.std(0) / math.sqrt(len(batches))
    assert ((batches.mean(0) - problem.pair_moments(B)).abs() <= 5 * error).all()
    assert problem.pair_moments(B).abs().max() > 10 * error.max()  # a wrong sign or constant would show


def test_designed_objective_minimum_value_and_location_in_closed_form():
    problem = ReLULandscapeDesign(5, generator=_gen(2))
    truth = problem.ground_truth
    assert float(problem.loss(truth)) == pytest.approx(problem.global_min_value, rel=1e-12)
    grad = torch.func.grad(problem.loss)(truth)
    assert grad.norm() < 1e-12
    # every signed permutation of the rescaled rows is a global minimizer too (B = DPB*)
    perm, signs = torch.tensor([2, 0, 4, 1, 3]), torch.tensor([1.0, -1, -1, 1, 1], dtype=torch.float64)
    s = problem._scales
    other = signs[:, None] * s[perm].sqrt()[:, None] * problem.B_star[perm]
    assert float(problem.loss(other)) == pytest.approx(problem.global_min_value, rel=1e-12)
    assert problem.recovery_error(other) < 1e-12
    assert problem.recovery_error(problem.init(_gen(3))) > 0.1


@pytest.mark.parametrize("make", [lambda g: ReLULandscapeDesign(4, generator=g),
                                  lambda g: ReLULandscapeDesign(3, samples=500, generator=g),
                                  lambda g: ReLUSquareLoss(4, generator=g)])
def test_gradient_matches_central_finite_differences(make):
    problem = make(_gen(4))
    B = problem.init(_gen(9))
    grad = torch.func.grad(problem.loss)(B)
    h = 1e-6
    fd = torch.zeros_like(B)
    for i in range(B.shape[0]):
        for j in range(B.shape[1]):
            e = torch.zeros_like(B)
            e[i, j] = h
            fd[i, j] = (problem.loss(B + e) - problem.loss(B - e)) / (2 * h)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-8)


def test_batched_loss_equals_the_loss_of_each_point():
    for problem in (ReLULandscapeDesign(4, generator=_gen()), ReLUSquareLoss(4, generator=_gen())):
        X = torch.stack([problem.init(_gen(s)) for s in range(3)])
        expected = torch.stack([problem.loss(x) for x in X])
        torch.testing.assert_close(problem.batched_loss(X), expected, rtol=0, atol=0)


def test_arccos_kernel_matches_monte_carlo():
    g = _gen(6)
    U = torch.randn(3, 4, generator=g, dtype=torch.float64)
    V = torch.randn(2, 4, generator=g, dtype=torch.float64)
    x = torch.randn(400_000, 4, generator=g, dtype=torch.float64)
    empirical = torch.relu(x @ U.T).T @ torch.relu(x @ V.T) / x.shape[0]
    torch.testing.assert_close(_arccos_kernel(U, V), empirical, rtol=0.02, atol=0.01)
    torch.testing.assert_close(torch.diagonal(_arccos_kernel(U, U)), (U * U).sum(1) / 2, rtol=1e-14, atol=0)


def test_square_loss_zero_at_the_truth_and_its_rescaled_permutations():
    problem = ReLUSquareLoss(5, generator=_gen(8))
    assert abs(float(problem.loss(problem.ground_truth))) < 1e-14
    assert problem.recovery_error(problem.ground_truth) < 1e-14
    # unit j with weight a_j computes teacher unit π(j) when b_j = (a_π(j)/a_j) b*_π(j)
    perm = torch.tensor([1, 2, 0, 4, 3])
    other = (problem.a_star[perm] / problem.a_star)[:, None] * problem.B_star[perm]
    assert abs(float(problem.loss(other))) < 1e-13 and problem.recovery_error(other) < 1e-12
    assert float(problem.loss(problem.init(_gen(1)))) > 0.1


@pytest.mark.parametrize("make", [
    lambda: ReLULandscapeDesign(3, width=4, generator=_gen()),
    lambda: ReLULandscapeDesign(3, c=0.0, generator=_gen()),
    lambda: ReLULandscapeDesign(3, lam=0.0, generator=_gen()),
    lambda: ReLUSquareLoss(3, output_range=(0.0, 1.0), generator=_gen()),
    lambda: relu_hermite_coefficient(-1),
])
def test_bad_arguments_are_config_errors(make):
    with pytest.raises(ConfigError):
        make()
