import pytest
import torch

from dltheory.claims import Result, Results, get_claim
from dltheory.claims.deep_linear_acceleration import _dataset, _loss, _minimum

CLAIM = get_claim("deep-linear-acceleration")


def test_smoke_depth_accelerates_l4_and_not_l2():
    sweep = CLAIM.sweep("smoke")
    results = Results()
    for config in sweep.configs:
        for seed in sweep.seeds:
            o = CLAIM.run(config, seed, "cpu")
            results.append(Result(config, seed, "ok", o.metrics, o.curves))
    verdict = CLAIM.judge(results)
    assert verdict.passed, verdict.measured
    l4 = results.where(p=4)[0].metrics
    assert l4["factor_N2"] >= 1.25 and l4["steps_N2"] < l4["steps_N1"]


@pytest.mark.parametrize("max_steps", [2000, 10])  # every seed arrives; none arrives
def test_batched_seeds_equal_each_seed_run_alone_bit_for_bit(max_steps):
    config = {"dataset": "synthetic", "p": 4, "max_steps": max_steps}
    together = CLAIM.run_batch(config, [0, 1, 2], "cpu")
    for seed, batched in zip([0, 1, 2], together):
        alone = CLAIM.run_batch(config, [seed], "cpu")[0]
        assert batched.metrics == alone.metrics and batched.curves == alone.curves, seed
    assert together[0].metrics != together[1].metrics
    assert all((o.metrics["steps_N1"] is None) == (max_steps == 10) for o in together)


def test_newton_minimum_is_the_least_squares_solution_for_p_2():
    X, y = _dataset("synthetic", torch.Generator().manual_seed(0))
    w = torch.linalg.lstsq(X, y[:, None]).solution[:, 0]
    L_star, grad_norm = _minimum(X, y, 2)
    assert abs(L_star - float(_loss(X, y, w, 2))) < 1e-12 and grad_norm < 1e-10
    L4, grad4 = _minimum(X, y, 4)
    assert grad4 < 1e-10 and L4 <= float(_loss(X, y, w, 4))


def _result(p, **overrides):
    base = dict(steps_N1=2000, steps_N2=1000, steps_N3=1100, factor_N2=2.0, factor_N3=1.8,
                best_lr_N1=0.25, best_lr_N2=0.7, best_lr_N3=0.5, best_lr_interior_N1=True,
                best_lr_interior_N2=True, best_lr_interior_N3=True, newton_grad_norm=1e-15)
    if p == 2:
        base.update(steps_N2=2100, steps_N3=2000, factor_N2=0.95, factor_N3=1.0)
    return Result({"dataset": "diabetes", "p": p}, 0, "ok", {**base, **overrides}, {})


@pytest.mark.parametrize("p, bad, check", [
    (4, dict(factor_N2=1.1), "diabetes, p=4, depth 2: accelerates"),
    (4, dict(factor_N3=0.8), "diabetes, p=4, depth 3: accelerates"),
    (2, dict(factor_N2=1.5), "diabetes, p=2, depth 2: no acceleration (control)"),
    (4, dict(best_lr_interior_N1=False), "diabetes, p=4: fair tuning"),
    (2, dict(steps_N1=None, factor_N2=None), "diabetes, p=2: fair tuning"),
    (4, dict(newton_grad_norm=1e-6), "diabetes, p=4: L* certified"),
])
def test_verdict_fails_when_the_numbers_break_the_criterion(p, bad, check):
    good = [_result(4), _result(2)]
    verdict = CLAIM.judge(Results(good + [_result(p, **bad), _result(p, **bad)]))
    assert verdict.passed is False
    assert verdict.details["checks"][check] is False
    assert check in verdict.measured
