import pytest

from dltheory.claims import Result, Results, get_claim
from dltheory.errors import ConfigError

CLAIM = get_claim("perturbed-gd-escapes-saddles")


def test_smoke_verdict_passes_gd_lingers_and_pgd_escapes_within_t_thres():
    sweep = CLAIM.sweep("smoke")
    results = Results()
    for config in sweep.configs:
        for seed in sweep.seeds:
            o = CLAIM.run(config, seed, "cpu")
            results.append(Result(config, seed, "ok", o.metrics, o.curves))
            assert o.metrics["control_max_distance"] == 0.0  # exactly at the saddle: GD never moves
            assert o.metrics["pgd_escape_max"] <= o.metrics["pgd_t_thres"] + 1
    verdict = CLAIM.judge(results)
    assert verdict.passed, verdict.measured
    assert "exponent" in verdict.details


def test_run_is_deterministic():
    config = CLAIM.sweep("smoke").configs[0]
    assert CLAIM.run(config, 3, "cpu").curves == CLAIM.run(config, 3, "cpu").curves


def _result(dim, **overrides):
    base = dict(gd_slope_median=11.5, gd_slope_predicted=11.5, control_escaped=0, control_max_distance=0.0,
                pgd_late_fraction=0.0, pgd_t_thres=1000 + dim, jin_total_bound=1e4)
    return Result({"dim": dim, "delta": 0.1}, 0, "ok", {**base, **overrides},
                  {"pgd_escape": [180.0 + dim / 100]})


@pytest.mark.parametrize("bad, check", [
    (dict(gd_slope_median=5.0), "GD steps grow like log(1/ρ₀)/log(1+ηγ)"),
    (dict(control_escaped=1), "GD from the saddle never leaves (control)"),
    (dict(pgd_late_fraction=0.5), "PGD escapes within t_thres"),
])
def test_verdict_fails_when_a_run_breaks_the_criterion(bad, check):
    verdict = CLAIM.judge(Results([_result(2), _result(64, **bad)]))
    assert verdict.passed is False and verdict.details["checks"][check] is False
    assert check in verdict.measured


def test_verdict_fails_when_escape_time_grows_faster_in_d_than_the_bound():
    fast = Result({"dim": 64, "delta": 0.1}, 0, "ok", _result(64).metrics, {"pgd_escape": [2000.0]})
    verdict = CLAIM.judge(Results([_result(2), fast]))
    assert verdict.details["checks"]["PGD escape grows with d no faster than the bound"] is False


def test_epsilon_that_makes_the_saddle_second_order_stationary_is_rejected():
    config = CLAIM.sweep("smoke").configs[0]
    with pytest.raises(ConfigError):
        CLAIM.validate({**config, "epsilon": 1.0})
