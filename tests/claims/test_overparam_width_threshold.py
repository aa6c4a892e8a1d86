
import pytest

from dltheory import ConfigError
from dltheory.claims import Result, Results, get_claim

CLAIM = get_claim("overparam-width-threshold")
SMOKE = CLAIM.sweep("smoke").configs
SHORT = {**SMOKE[0], "n": 40, "widths": [1, 4, 16], "steps": 200}


def test_batched_seeds_equal_each_seed_run_alone_bit_for_bit():
    together = CLAIM.run_batch(SHORT, [0, 1, 2], "cpu")
    for seed, batched in zip([0, 1, 2], together):
        alone = CLAIM.run_batch(SHORT, [seed], "cpu")[0]
        assert batched.metrics == alone.metrics and batched.curves == alone.curves, seed
    assert together[0].curves != together[1].curves


def test_seeds_leaving_the_batch_as_they_fit_get_what_they_get_alone():
    # seeds 1 and 3 fit at width 6 after 100 steps and leave while 0 and 2 train on (to 300
    # steps, then width 11): the rows left must keep their bits, each seed its own record
    config = {**SHORT, "widths": [3, 6, 11], "steps": 300, "n": 32}
    together = CLAIM.run_batch(config, [0, 1, 2, 3], "cpu")
    assert [o.metrics["m_star"] for o in together] == [11, 6, 11, 6]
    for seed, batched in enumerate(together):
        alone = CLAIM.run_batch(config, [seed], "cpu")[0]
        assert batched.metrics == alone.metrics and batched.curves == alone.curves, seed


def test_threshold_is_the_smallest_fitting_width_and_wider_nets_are_skipped():
    out = CLAIM.run_batch({**SHORT, "widths": [1, 2, 4, 8, 16, 32, 64], "steps": 400}, [0], "cpu")[0]
    fit = out.curves["fit"]
    m_star = out.metrics["m_star"]
    assert m_star is not None and out.metrics["p_star"] == m_star * (SHORT["d"] + 1)
    i = out.curves["width"].index(m_star)
    assert fit[i] == 1.0 and all(f == 0.0 for f in fit[:i]) and all(f is None for f in fit[i + 1:])


def test_smoke_sweep_runs_and_judges():
    sweep = CLAIM.sweep("smoke")
    results = Results(Result(c, s, "ok", o.metrics, o.curves) for c in sweep.configs
                      for s, o in zip(sweep.seeds, CLAIM.run_batch(c, list(sweep.seeds), "cpu")))
    verdict = CLAIM.judge(results)
    assert verdict.passed in (True, False) and "random labels: p* ∝ n^" in verdict.measured
    assert CLAIM.figure(results) is not None


def _results(p_random, p_real, d=15):
    """p* by n for each label kind (None = unfit), three seeds with the same value."""
    rows = []
    for labels, table in (("random", p_random), ("real", p_real)):
        for n, p in table.items():
            for s in range(3):
                m = p // (d + 1) if p else None
                rows.append(Result({"n": n, "labels": labels, "d": d}, s, "ok",
                                   {"p_star": p and p * (1 + 0.01 * s), "m_star": m}, {}))
    return Results(rows)


GOOD_RANDOM = {64: 256, 128: 512, 256: 1024, 512: 2048}
GOOD_REAL = {64: 64, 128: 64, 256: 128, 512: 128}


def test_judge_passes_on_linear_random_threshold_and_cheaper_real_labels():
    verdict = CLAIM.judge(_results(GOOD_RANDOM, GOOD_REAL))
    assert verdict.passed is True
    assert verdict.details["fits"]["random"]["b"] == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("random, real, check", [
    ({**GOOD_RANDOM, 512: None}, GOOD_REAL, "random labels fit within the width grid"),
    ({64: 16, 128: 128, 256: 1024, 512: 8192}, GOOD_REAL, "random-label exponent near 1"),
    ({64: 10, 128: 40000, 256: 10, 512: 40000}, GOOD_REAL, "random-label interval excludes 4"),
    (GOOD_RANDOM, GOOD_RANDOM, "real labels need fewer parameters"),
])
def test_judge_fails_when_the_numbers_break_the_criterion(random, real, check):
    verdict = CLAIM.judge(_results(random, real))
    assert verdict.passed is False
    assert verdict.details["checks"][check] is False and check in verdict.measured


@pytest.mark.parametrize("key, value", [("labels", "noisy"), ("d", 65), ("n", 5000),
                                         ("widths", [4, 2]), ("steps", 0), ("lr", -1.0)])
def test_bad_configs_are_refused(key, value):
    with pytest.raises(ConfigError):
        CLAIM.validate({**SHORT, key: value})
