import pytest

from dltheory.claims import Result, Results, get_claim

CLAIM = get_claim("deep-linear-end-to-end-dynamics")
SMOKE = CLAIM.sweep("smoke")


def _run(config, seeds):
    return CLAIM.run_batch(config, seeds, "cpu")


def test_smoke_shows_o_eta_squared_and_the_unbalanced_control_o_eta():
    results = Results()
    for config in SMOKE.configs:
        for seed, o in zip(SMOKE.seeds, _run(config, list(SMOKE.seeds))):
            results.append(Result(config, seed, "ok", o.metrics, o.curves))
            assert abs(o.metrics["slope_balanced"] - 2) < 0.1
            assert o.metrics["rel_dev_balanced_min_eta"] < o.metrics["rel_dev_control_min_eta"]
    verdict = CLAIM.judge(results)
    assert verdict.passed, verdict.measured


def test_batched_seeds_equal_each_seed_run_alone_bit_for_bit():
    config = SMOKE.configs[-1]
    together = _run(config, [0, 1, 2, 3])
    for seed, batched in zip([0, 1, 2, 3], together):
        alone = _run(config, [seed])[0]
        assert batched.metrics == alone.metrics and batched.curves == alone.curves
    assert together[0].metrics != together[1].metrics


def _result(**overrides):
    base = dict(slope_balanced=2.0, slope_control=1.0, balancedness_balanced=1e-15,
                balancedness_control=1.0, rel_dev_balanced_min_eta=1e-5,
                rel_dev_control_min_eta=0.3)
    return Result({"depth": 2}, 0, "ok", {**base, **overrides}, {})


@pytest.mark.parametrize("bad, check", [
    (dict(slope_balanced=1.0), "balanced: deviation O(η²)"),  # the formula fails to first order
    (dict(slope_balanced=2.3), "balanced: deviation O(η²)"),
    (dict(balancedness_balanced=1e-3), "balanced init balanced"),
    (dict(slope_control=2.0), "control: deviation O(η)"),  # the control also follows it
])
def test_verdict_fails_when_a_run_breaks_the_criterion(bad, check):
    verdict = CLAIM.judge(Results([_result(), _result(**bad)]))
    assert verdict.passed is False
    assert verdict.details["checks"][check] is False
    assert check in verdict.measured
