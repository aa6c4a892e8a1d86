"""Problems: the planted truth is a global minimizer, and local search from random init finds it."""

import pytest
import torch
from torch.func import vmap

from dltheory.errors import ConfigError, ShapeError
from dltheory.optim import GD, RiemannianGD, make_manifold, minimize
from dltheory.problems import (
    AsymmetricMatrixSensing,
    CovarianceEstimation,
    DictionaryLearning,
    LowRankApproximation,
    MatrixCompletion,
    MatrixSensing,
    MaxCutBurerMonteiro,
    OrthogonalTensorDecomposition,
    PhaseRetrieval,
    QuadraticNetwork,
    RobustPCA,
    StrictSaddle,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# name -> (factory, lr, steps, init scale) for plain or Riemannian GD from a random start
SMOOTH = {
    "sensing": (lambda g: MatrixSensing(8, 2, 120, generator=g), 0.2, 300, 1e-2),
    "sensing-overparametrized": (lambda g: MatrixSensing(8, 2, 120, width=4, generator=g), 0.2, 500, 1e-3),
    "asymmetric-sensing": (lambda g: AsymmetricMatrixSensing(8, 6, 2, 120, generator=g), 0.2, 400, 1e-2),
    "covariance": (lambda g: CovarianceEstimation(8, 2, 200, generator=g), 0.05, 400, 1e-2),
    "quadratic-net": (lambda g: QuadraticNetwork(8, 2, 2, 200, generator=g), 0.05, 400, 1e-2),
    "completion": (lambda g: MatrixCompletion(12, 2, 0.6, generator=g), 0.2, 300, 1e-2),
    "low-rank-approximation": (lambda g: LowRankApproximation(8, 6, 2, generator=g), 0.3, 400, 0.1),
    "phase-retrieval": (lambda g: PhaseRetrieval(8, 120, generator=g), 0.1, 300, 0.1),
    "tensor": (lambda g: OrthogonalTensorDecomposition(4, generator=g), 0.1, 300, 1.0),
    "max-cut": (lambda g: MaxCutBurerMonteiro(12, generator=g), 0.1, 400, 1.0),
    "strict-saddle": (lambda g: StrictSaddle(3, 2), 0.1, 300, 0.1),
}


def _descend(problem, init, lr, steps):
    if problem.manifold is None:
        return minimize(problem.loss, init, GD, steps=steps, lr=lr).params
    return minimize(problem.loss, init, RiemannianGD, steps=steps, lr=lr, manifold=problem.manifold).params


def _riemannian_grad_norm(problem, params):
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()} if isinstance(params, dict) \
        else params.clone().requires_grad_()
    flat = list(leaves.values()) if isinstance(leaves, dict) else [leaves]
    grads = torch.autograd.grad(problem.loss(leaves), flat)
    if problem.manifold is not None:
        grads = [make_manifold(problem.manifold).tangent(x.detach(), g) for x, g in zip(flat, grads)]
    return float(torch.sqrt(sum((g ** 2).sum() for g in grads)))


@pytest.mark.parametrize("name", SMOOTH)
def test_ground_truth_is_a_global_minimizer_with_zero_gradient(name):
    problem = SMOOTH[name][0](_gen(0))
    truth = problem.ground_truth
    # max-cut's reference comes from an interior-point solver, accurate to about 1e-8 relative
    assert float(problem.loss(truth)) == pytest.approx(problem.global_min_value, rel=1e-7, abs=1e-12)
    assert _riemannian_grad_norm(problem, truth) < 1e-5
    assert problem.recovery_error(truth) < 1e-6 and problem.success(truth)


@pytest.mark.parametrize("name", SMOOTH)
def test_gd_from_random_init_recovers_the_ground_truth(name):
    make, lr, steps, scale = SMOOTH[name]
    problem = make(_gen(0))
    init = problem.init(_gen(1), scale)
    assert not problem.success(init)
    assert problem.success(_descend(problem, init, lr, steps))


@pytest.mark.parametrize("name", ["sensing", "phase-retrieval", "tensor", "max-cut"])
def test_loss_is_vmappable_over_stacked_seeds(name):
    problem = SMOOTH[name][0](_gen(0))
    inits = [problem.init(_gen(seed), 0.5) for seed in range(3)]
    batched = vmap(problem.loss)(torch.stack(inits))
    assert torch.allclose(batched, torch.stack([problem.loss(x) for x in inits]))


def test_instances_are_deterministic_in_the_generator():
    a, b = MatrixSensing(6, 2, 50, generator=_gen(3)), MatrixSensing(6, 2, 50, generator=_gen(3))
    assert torch.equal(a.A, b.A) and torch.equal(a.M_star, b.M_star)
    assert not torch.equal(a.A, MatrixSensing(6, 2, 50, generator=_gen(4)).A)


def test_recovery_error_is_invariant_under_the_problems_symmetries():
    sensing = MatrixSensing(6, 2, 50, width=3, generator=_gen(0))
    Q, _ = torch.linalg.qr(torch.randn(3, 3, generator=_gen(1), dtype=torch.float64))
    U = sensing.init(_gen(2))
    assert sensing.recovery_error(U @ Q) == pytest.approx(sensing.recovery_error(U))
    phase = PhaseRetrieval(5, 40, generator=_gen(0))
    assert phase.recovery_error(-phase.ground_truth) < 1e-12
    tensor = OrthogonalTensorDecomposition(4, generator=_gen(0))
    signed_permutation = torch.tensor([[0, 1, 0, 0], [0, 0, 0, -1], [1, 0, 0, 0], [0, 0, -1, 0]],
                                      dtype=torch.float64)
    assert tensor.recovery_error(signed_permutation @ tensor.ground_truth) < 1e-12
    assert tensor.loss(signed_permutation @ tensor.ground_truth) < 1e-12


def test_low_rank_approximation_other_singular_pairs_are_saddles():
    problem = LowRankApproximation(8, 6, 2, generator=_gen(0))
    saddle = problem.critical_point([0, 2])
    assert _riemannian_grad_norm(problem, saddle) < 1e-12
    assert float(problem.loss(saddle)) > problem.global_min_value + 1e-3
    # rotating the factor from singular pair 2 toward pair 1 decreases the loss: a descent direction
    P, _, Qh = torch.linalg.svd(problem.M)
    t = 1e-3
    moved = {"U": saddle["U"] + t * torch.nn.functional.pad(P[:, 1:2], (1, 0)),
             "V": saddle["V"] + t * torch.nn.functional.pad(Qh[1:2].T, (1, 0))}
    assert float(problem.loss(moved)) < float(problem.loss(saddle))


def test_strict_saddle_hessian_and_stable_manifold():
    problem = StrictSaddle(4, 2, gamma=2.0)
    assert torch.allclose(torch.autograd.functional.hessian(problem.loss, problem.saddle),
                          problem.hessian(problem.saddle))
    assert float(torch.linalg.eigvalsh(problem.hessian(problem.saddle))[0]) == -2.0
    start = problem.stable_manifold_point(_gen(0))
    end = minimize(problem.loss, start, GD, steps=400, lr=0.1).params
    assert float(end.norm()) < 1e-12  # GD on the stable manifold converges to the saddle


def test_dictionary_learning_recovers_a_column_from_random_starts():
    problem = DictionaryLearning(4, 1000, generator=_gen(0))
    for seed in range(3):
        q = _descend(problem, problem.init(_gen(seed)), 0.1, 300)
        assert problem.success(q)


def test_robust_pca_subgradient_method_recovers_despite_outliers():
    problem = RobustPCA(12, 2, 0.1, generator=_gen(0))
    assert float(problem.loss(problem.ground_truth)) == pytest.approx(problem.global_min_value)
    U = problem.init(_gen(1), 0.5).requires_grad_()
    opt = GD([U], lr=5.0)
    schedule = torch.optim.lr_scheduler.ExponentialLR(opt, 0.99)
    for _ in range(800):
        opt.zero_grad()
        problem.loss(U).backward()
        opt.step()
        schedule.step()
    assert problem.success(U.detach())
    # least squares is pulled off the truth by the outliers: the ℓ1 loss is what makes it robust
    M = problem.M
    eigenvalues, vectors = torch.linalg.eigh(M)
    least_squares = vectors[:, -2:] * eigenvalues[-2:].clamp(min=0).sqrt()
    assert not problem.success(least_squares)


def test_max_cut_rounding_respects_sdp_bound_and_goemans_williamson_ratio():
    problem = MaxCutBurerMonteiro(12, generator=_gen(0))
    sdp = -problem.global_min_value
    signs, value = problem.round(problem.ground_truth, _gen(1))
    assert value == pytest.approx(problem.cut_value(signs))
    assert 0.878 * sdp <= value <= sdp + 1e-6


def test_max_cut_rank_one_burer_monteiro_is_max_cut_itself():
    problem = MaxCutBurerMonteiro(12, rank=1, generator=_gen(0))
    x = problem.init(_gen(1))
    assert -float(problem.loss(x)) == pytest.approx(problem.cut_value(x[:, 0]))


@pytest.mark.parametrize("make", [
    lambda: MatrixSensing(0, 1, 10, generator=_gen()),
    lambda: MatrixSensing(5, 3, 10, width=2, generator=_gen()),
    lambda: MatrixCompletion(5, 1, 1.5, generator=_gen()),
    lambda: RobustPCA(5, 1, 0.0, generator=_gen()),
    lambda: LowRankApproximation(4, 3, 3, generator=_gen()),
    lambda: DictionaryLearning(4, 10, mu=0.0, generator=_gen()),
    lambda: StrictSaddle(2, 3),
    lambda: OrthogonalTensorDecomposition(1, generator=_gen()),
])
def test_invalid_sizes_raise_config_error(make):
    with pytest.raises(ConfigError):
        make()


def test_wrong_parameter_shape_raises_shape_error():
    problem = MatrixSensing(6, 2, 20, generator=_gen())
    with pytest.raises(ShapeError, match=r"\(6, 2\)"):
        problem.loss(torch.zeros(6, 3, dtype=torch.float64))
    with pytest.raises(ConfigError, match="'U' and 'V'"):
        LowRankApproximation(4, 3, 2, generator=_gen()).loss(torch.zeros(4, 2))


@pytest.mark.parametrize("make", [
    lambda g: MatrixSensing(7, 2, 30, width=5, generator=g),
    lambda g: AsymmetricMatrixSensing(7, 6, 2, 30, width=4, balance=0.0, generator=g),
    lambda g: CovarianceEstimation(7, 2, 30, width=5, generator=g),
    lambda g: QuadraticNetwork(7, 2, 5, 30, generator=g),  # params W = Uᵀ: (width, n)
], ids=["symmetric", "asymmetric", "covariance", "quadratic-net"])
def test_closed_form_residual_jacobian_equals_autodiff(make):
    g = torch.Generator().manual_seed(3)
    problem = make(g)
    params = problem.init(g)
    J = problem.residual_jacobian(params)
    auto = torch.func.jacrev(problem.residuals)(params)
    for key in (params if isinstance(params, dict) else [None]):
        got, want = (J, auto) if key is None else (J[key], auto[key])
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_robust_pca_closed_form_jacobian_and_gram_equal_autodiff():
    from dltheory.problems import FactoredRobustPCA

    g = torch.Generator().manual_seed(4)
    problem = FactoredRobustPCA(6, 5, 1, 0.1, width=3, generator=g)
    params = problem.init(g)
    J = problem.residual_jacobian(params)
    auto = torch.func.jacrev(problem.residuals)(params)
    for key in params:
        torch.testing.assert_close(J[key], auto[key], rtol=0, atol=1e-12)
    flat = torch.cat([auto[k].reshape(30, -1) for k in params], 1)
    torch.testing.assert_close(problem.residual_gram(params), flat @ flat.mT, rtol=0, atol=1e-12)
