import pytest

from dltheory.claims import Result, Results, get_claim
from dltheory.errors import ConfigError

CLAIM = get_claim("flat-minima-depth")
SMOKE = CLAIM.sweep("smoke")
GRID = sorted({c["m"] for c in SMOKE.configs})


def _config(depth, m):
    return next(c for c in SMOKE.configs if c["depth"] == depth and c["m"] == m)


def test_smoke_flattest_recovers_past_the_threshold_matches_cvxpy_and_the_control_fails():
    results = Results()
    for depth in (2, 3):
        for m in GRID:
            config = _config(depth, m)
            results.append(Result(config, 0, "ok", CLAIM.run(config, 0, "cpu").metrics, {}))
    top, control = results.where(m=GRID[-1]), results.where(m=GRID[0])
    assert all(r.metrics["flat_error"] <= 1e-3 for r in top)
    assert all(r.metrics["flat_error"] >= 0.1 for r in control)
    assert all(r.metrics["flat_relative_loss"] <= 1e-9 for r in results)
    for r in results.where(depth=2):  # the independent answer: 2 × min weighted nuclear norm
        assert r.metrics["flat_trace"] == pytest.approx(r.metrics["min_trace_depth2"], rel=1e-3)
    # one instance per (m, seed), shared by the depths: the paired comparison
    assert top[0].metrics["min_trace_depth2"] == top[1].metrics["min_trace_depth2"]
    assert CLAIM.judge(results).details["checks"]["depth 2: flattest recovers at m=%d" % GRID[-1]]


def test_runs_are_deterministic():
    config = _config(3, GRID[0])
    assert CLAIM.run(config, 0, "cpu").metrics == CLAIM.run(config, 0, "cpu").metrics


GOOD = [15, 22, 30, 46]


def _result(depth, m, seed=0, **overrides):
    recovered = m >= 30
    metrics = dict(flat_error=1e-8 if recovered else 0.5, flat_relative_loss=1e-30, flat_trace=10.0,
                   other_error=1.0, other_relative_loss=1e-30, other_trace=100.0, min_trace_depth2=10.0,
                   flat_to_cvx=1e-8)
    metrics["cvx_error"] = metrics["flat_error"]
    if not recovered and m != GOOD[0]:
        metrics.update(truth_trace=11.0, truth_residual=1e-16)
    metrics.update(overrides)
    return Result({"n": 8, "iterations": 150, "depth": depth, "m": m}, seed, "ok", metrics, {})


def _results(bad_depth=None, bad_m=None, **bad):
    return Results(_result(d, m, s, **(bad if d == bad_depth and (bad_m is None or m == bad_m) else {}))
                   for d in (2, 3, 4) for m in GOOD for s in range(2))


def test_good_metrics_pass():
    verdict = CLAIM.judge(_results())
    assert verdict.passed is True, verdict.measured
    assert "agree on the threshold" in verdict.measured and "m*=30" in verdict.measured


@pytest.mark.parametrize("depth, m, bad, check", [
    (2, 22, dict(flat_trace=10.1), "depth 2: flattest = weighted nuclear norm minimizer (cvxpy)"),
    (2, 46, dict(cvx_error=2e-3), "depth 2: flattest recovers at m=46"),
    (3, 30, dict(flat_relative_loss=1e-6), "depth 3: flattest interpolates"),
    (4, 46, dict(flat_trace=101.0), "depth 4: flattest no sharper than the non-flat interpolant"),
    (3, 22, dict(truth_trace=9.0), "depth 3: search at least as flat as the truth"),
    (4, 15, dict(flat_error=1e-2), "depth 4: control (m=15) fails"),
    (3, 22, dict(flat_error=1e-5), "depth 3: m*(3) ≥ m*(2)"),
])
def test_verdict_fails_when_a_check_breaks(depth, m, bad, check):
    verdict = CLAIM.judge(_results(depth, m, **bad))
    assert verdict.passed is False
    assert verdict.details["checks"][check] is False
    assert check in verdict.measured


def test_a_deeper_flattest_recovering_with_fewer_measurements_is_reported_as_disagreement():
    verdict = CLAIM.judge(_results(4, 22, flat_error=1e-6))
    assert verdict.details["thresholds"] == {2: 30, 3: 30, 4: 22}
    assert "disagree" in verdict.measured and "depth helped 2, hurt 0" in verdict.measured


@pytest.mark.parametrize("key, value", [("depth", 5), ("n", 2), ("m", 0), ("m", 64), ("iterations", 5)])
def test_bad_config_raises_config_error(key, value):
    with pytest.raises(ConfigError):
        CLAIM.validate({**_config(2, GRID[0]), "n": 8, key: value})
