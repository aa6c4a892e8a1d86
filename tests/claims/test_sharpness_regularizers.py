import pytest
import torch

from dltheory.claims import Result, Results, get_claim
from dltheory.claims.sharpness_regularizers import _StackedSensing
from dltheory.errors import ConfigError
from dltheory.problems import AsymmetricMatrixSensing

CLAIM = get_claim("sharpness-regularizers")
SMOKE = CLAIM.sweep("smoke")


def _config(task, method, **overrides):
    return {**next(c for c in SMOKE.configs if c["task"] == task and c["method"] == method), **overrides}


def _timeless(metrics):
    return {k: v for k, v in metrics.items() if k not in CLAIM.timings}


@pytest.mark.parametrize("task, key", [("sensing", "error"), ("digits", "test_error")])
def test_every_method_starts_from_the_same_instance_and_init(task, key):
    # with a vanishing step size the three methods end where they started
    start = [CLAIM.run(_config(task, m, lr=1e-12, steps=1), 0, "cpu").metrics for m in ("gd", "trace", "sam")]
    for other in start[1:]:
        assert other[key] == pytest.approx(start[0][key], rel=1e-9)
        assert other["trace"] == pytest.approx(start[0]["trace"], rel=1e-9)


def test_smoke_sensing_regularizers_end_flatter_than_gd_which_misses_the_truth():
    runs = {m: CLAIM.run(_config("sensing", m), 0, "cpu").metrics for m in ("gd", "trace", "sam")}
    assert runs["gd"]["error"] >= 0.5
    assert runs["trace"]["trace"] < runs["gd"]["trace"] and runs["trace"]["error"] < runs["gd"]["error"]
    assert runs["sam"]["trace"] < runs["gd"]["trace"]
    assert all(r["us_per_step"] > 0 for r in runs.values())


@pytest.mark.parametrize("method", ["gd", "trace", "sam"])
def test_batched_seeds_equal_each_seed_run_alone_bit_for_bit(method):
    config = _config("sensing", method, steps=100)
    together = CLAIM.run_batch(config, [0, 1, 2], "cpu")
    for seed, batched in zip([0, 1, 2], together):
        alone = CLAIM.run_batch(config, [seed], "cpu")[0]
        assert _timeless(batched.metrics) == _timeless(alone.metrics), seed
    assert together[0].metrics != together[1].metrics


def test_stacked_sensing_is_the_problems_loss_and_hessian_trace():
    gens = [torch.Generator().manual_seed(s) for s in range(3)]
    problems = [AsymmetricMatrixSensing(5, 5, 1, 28, width=5, balance=0.0, generator=g) for g in gens]
    points = [p.init(g, scale=2.0) for p, g in zip(problems, gens)]
    L, R = (torch.stack([x[k] for x in points]) for k in ("L", "R"))
    stacked = _StackedSensing(problems)
    for measure in ("loss", "hessian_trace"):
        expected = torch.stack([getattr(p, measure)(x) for p, x in zip(problems, points)])
        torch.testing.assert_close(getattr(stacked, measure)(L, R), expected, rtol=1e-13, atol=0)


def test_runs_are_deterministic_but_for_the_timing():
    config = _config("digits", "trace")
    assert _timeless(CLAIM.run(config, 0, "cpu").metrics) == _timeless(CLAIM.run(config, 0, "cpu").metrics)


_GOOD = {
    ("sensing", "gd"): dict(error=3.0, trace=400.0), ("sensing", "trace"): dict(error=0.3, trace=20.0),
    ("sensing", "sam"): dict(error=2.0, trace=200.0),
    ("digits", "gd"): dict(test_error=0.07, trace=8.0), ("digits", "trace"): dict(test_error=0.06, trace=4.0),
    ("digits", "sam"): dict(test_error=0.07, trace=7.0),
}


def _results(bad_task=None, bad_method=None, **bad):
    out = Results()
    for (task, method), metrics in _GOOD.items():
        for seed in range(3):
            m = {**metrics, "us_per_step": 100.0}
            if (task, method) == (bad_task, bad_method):
                m.update(bad)
            out.append(Result({"task": task, "method": method}, seed, "ok", m, {}))
    return out


def test_good_metrics_pass():
    verdict = CLAIM.judge(_results())
    assert verdict.passed is True, verdict.measured


@pytest.mark.parametrize("task, method, bad, check", [
    ("sensing", "gd", dict(error=0.4), "sensing: GD misses the truth"),
    ("sensing", "trace", dict(trace=500.0), "sensing: trace-reg flatter than GD"),
    ("sensing", "trace", dict(error=3.5), "sensing: trace-reg nearer the truth than GD"),
    ("sensing", "sam", dict(trace=400.0), "sensing: SAM flatter than GD"),
    ("digits", "trace", dict(trace=8.5), "digits: trace-reg flatter than GD"),
    ("digits", "sam", dict(trace=9.0), "digits: SAM flatter than GD"),
    ("digits", "trace", dict(test_error=0.08), "digits: trace-reg test error ≤ GD"),
    ("digits", "sam", dict(test_error=0.071), "digits: SAM test error ≤ GD"),
])
def test_verdict_fails_when_a_check_breaks(task, method, bad, check):
    verdict = CLAIM.judge(_results(task, method, **bad))
    assert verdict.passed is False
    assert verdict.details["checks"][check] is False
    assert check in verdict.measured


@pytest.mark.parametrize("task, key, value", [("sensing", "task", "x"), ("sensing", "method", "adam"),
                                              ("sensing", "lr", 0.0), ("digits", "rho", -1.0),
                                              ("sensing", "steps", 0), ("sensing", "n", 2),
                                              ("digits", "train", 1700)])
def test_bad_config_raises_config_error(task, key, value):
    with pytest.raises(ConfigError):
        CLAIM.validate({**_config(task, "gd"), key: value})
