import math

import pytest

from dltheory.claims import Result, Results, get_claim

CLAIM = get_claim("implicit-bias-gd-l2")
SHORT = {**CLAIM.sweep("smoke").configs[0], "steps": 2000}


def test_batched_seeds_equal_each_seed_run_alone_bit_for_bit():
    seeds = list(range(9))
    together = CLAIM.run_batch(SHORT, seeds, "cpu")
    for seed, batched in zip(seeds, together):
        alone = CLAIM.run_batch(SHORT, [seed], "cpu")[0]
        assert batched.metrics == alone.metrics, seed
        assert batched.curves == alone.curves, seed
    assert together[0].metrics != together[1].metrics


def test_smoke_run_shows_the_theorem_and_the_control_differs():
    config = CLAIM.sweep("smoke").configs[0]
    outcomes = CLAIM.run_batch(config, [0, 1, 2], "cpu")
    verdict = CLAIM.judge(Results(Result(config, s, "ok", o.metrics, o.curves)
                                  for s, o in zip([0, 1, 2], outcomes)))
    assert verdict.passed, verdict.measured
    for o in outcomes:
        m = o.metrics
        assert m["gap_T"] < m["control_gap_T"]
        assert m["control_cos_to_least_squares"] > 0.999
        assert m["max_margin_ratio"] <= 1 + 1e-9
        assert m["svm_kkt_residual"] < 1e-6


def _result(**overrides):
    base = dict(gap_T=0.08, gap_T_over_10=0.1, gap_log_ratio=1.01, stalled_log_ratio=1.33,
                norm_slope_ratio=0.97, max_margin_ratio=0.93, control_cos_to_least_squares=1.0,
                control_gap_T=0.3, control_gap_T_over_10=0.3, one_minus_cos_T=0.003, rate_b=0.5,
                margin_ratio_T=0.93, gap_times_log_T=0.8, second_margin_theta=1.2)
    return Result({}, 0, "ok", {**base, **overrides}, {})


@pytest.mark.parametrize("bad, check", [
    (dict(gap_T=0.1, gap_T_over_10=0.1), "gap still decreasing"),
    (dict(gap_log_ratio=1.33), "gap·log t bounded"),  # a gap that stopped shrinking
    (dict(norm_slope_ratio=0.0), "‖w‖ grows like ‖ŵ‖ log t"),
    (dict(max_margin_ratio=1.01), "margin ≤ SVM margin"),
    (dict(control_gap_T=0.05), "control stays away from ŵ"),
    (dict(control_gap_T=0.2, control_gap_T_over_10=0.3), "control stays away from ŵ"),
])
def test_verdict_fails_when_any_seed_breaks_the_criterion(bad, check):
    verdict = CLAIM.judge(Results([_result(), _result(**bad)]))
    assert verdict.passed is False
    assert verdict.details["checks"][check] is False
    assert check in verdict.measured


def test_curves_are_log_spaced_and_finite():
    outcome = CLAIM.run_batch(SHORT, [0], "cpu")[0]
    t = outcome.curves["t"]
    assert t[0] == 1 and t[-1] == SHORT["steps"] and t == sorted(set(t))
    assert all(math.isfinite(x) for x in outcome.curves["gap"])


def test_the_smallest_step_count_validate_allows_runs():
    # steps = 1000 put t = 1 in the rate fit's window [T/1000, T]: 1/log 1 raised a
    # ZeroDivisionError instead of a result.
    config = {**SHORT, "steps": 1000}
    CLAIM.validate(config)
    outcome = CLAIM.run_batch(config, [0], "cpu")[0]
    assert all(math.isfinite(v) for v in outcome.metrics.values() if isinstance(v, float))
