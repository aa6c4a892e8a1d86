import pytest
import torch

from dltheory.errors import ConfigError
from dltheory.measure import hessian_trace
from dltheory.problems import AsymmetricMatrixSensing, DeepMatrixSensing


@pytest.mark.parametrize("depth", [2, 3, 4])
@pytest.mark.parametrize("where", ["random", "interpolant"])
def test_closed_form_trace_equals_the_exact_hessian_trace(depth, where):
    gen = torch.Generator().manual_seed(depth)
    problem = DeepMatrixSensing(4, 3, 1, 9, depth=depth, width=3, generator=gen)
    params = problem.init(gen) if where == "random" else problem.ground_truth
    exact = hessian_trace(problem.loss, params, method="exact").value
    assert float(problem.hessian_trace(params)) == pytest.approx(float(exact), rel=1e-10)


def test_interpolating_trace_is_the_gauss_newton_sum():
    # at zero residual: tr ∇²f = (1/m) Σ_i ‖∇θ ⟨A_i, W(θ)⟩‖²
    gen = torch.Generator().manual_seed(0)
    problem = DeepMatrixSensing(4, 4, 1, 10, depth=3, width=4, generator=gen)
    truth = problem.ground_truth
    names = list(truth)
    jac = torch.func.jacrev(lambda *Ws: problem.residuals(dict(zip(names, Ws))), argnums=(0, 1, 2))(
        *truth.values())
    gauss_newton = sum((J ** 2).sum() for J in jac) / problem.measurements
    assert float(problem.hessian_trace(truth)) == pytest.approx(float(gauss_newton), rel=1e-12)


def test_depth_two_is_bilinear_sensing():
    deep = DeepMatrixSensing(5, 4, 1, 12, depth=2, width=3, generator=torch.Generator().manual_seed(1))
    flat = AsymmetricMatrixSensing(5, 4, 1, 12, width=3, balance=0.0,
                                   generator=torch.Generator().manual_seed(1))
    params = deep.init(torch.Generator().manual_seed(2))
    LR = {"L": params["W2"], "R": params["W1"].mT}
    assert float(deep.loss(params)) == pytest.approx(float(flat.loss(LR)), rel=1e-12)
    assert float(deep.hessian_trace(params)) == pytest.approx(float(flat.hessian_trace(LR)), rel=1e-12)


def test_ground_truth_interpolates_and_recovers():
    problem = DeepMatrixSensing(5, 5, 2, 20, depth=4, width=3, generator=torch.Generator().manual_seed(3))
    assert float(problem.loss(problem.ground_truth)) < 1e-28
    assert problem.recovery_error(problem.ground_truth) < 1e-12


@pytest.mark.parametrize("kwargs", [dict(depth=1), dict(depth=2.0), dict(depth=3, width=0),
                                    dict(depth=3, width=1, rank=2)])
def test_bad_sizes_raise_config_error(kwargs):
    args = dict(rank=1, depth=3, width=3) | kwargs
    with pytest.raises(ConfigError):
        DeepMatrixSensing(4, 4, args.pop("rank"), 8, generator=torch.Generator(), **args)


def test_params_with_wrong_keys_raise_config_error():
    problem = DeepMatrixSensing(4, 4, 1, 8, depth=3, width=3, generator=torch.Generator())
    with pytest.raises(ConfigError):
        problem.loss({"W1": torch.zeros(3, 4)})
