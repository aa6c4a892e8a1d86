
import pytest
import torch

from dltheory import ConfigError
from dltheory.claims import Result, Results, get_claim
from dltheory.claims.width_generalization import MEASURES, _measures
from dltheory.measure.bounds import neyshabur_two_layer_rademacher

CLAIM = get_claim("width-generalization")
SMOKE = CLAIM.sweep("smoke").configs
SHORT = {**SMOKE[0], "steps": 120}


def test_batched_seeds_equal_each_seed_run_alone_bit_for_bit():
    together = CLAIM.run_batch(SHORT, [0, 1, 2], "cpu")
    for seed, batched in zip([0, 1, 2], together):
        alone = CLAIM.run_batch(SHORT, [seed], "cpu")[0]
        assert batched.metrics == alone.metrics, seed
    assert together[0].metrics != together[1].metrics


def test_a_seed_that_stops_early_leaves_the_batch_with_the_weights_it_gets_alone():
    config = SMOKE[3]  # width 64: seed 1 stops at step 200, seeds 0 and 2 at 250
    together = CLAIM.run_batch(config, [0, 1, 2], "cpu")
    assert [r.metrics["steps"] for r in together] == [250, 200, 250]
    for seed, batched in zip([0, 1, 2], together):
        assert batched.metrics == CLAIM.run_batch(config, [seed], "cpu")[0].metrics, seed


def test_every_width_of_a_seed_sees_the_same_split():
    a = CLAIM._split({**SHORT, "width": 8}, 3, "cpu")
    b = CLAIM._split({**SHORT, "width": 512}, 3, "cpu")
    assert all(x.equal(z) for x, z in zip(a, b))
    assert not CLAIM._split(SHORT, 4, "cpu")[1].equal(a[1])


def test_measures_match_the_bounds_by_hand():
    g = torch.Generator().manual_seed(0)
    U0 = torch.randn(30, 4, generator=g, dtype=torch.float64)
    U, V = U0 + 0.1, torch.randn(10, 30, generator=g, dtype=torch.float64)
    X = torch.nn.functional.normalize(torch.randn(50, 4, generator=g, dtype=torch.float64), dim=1)
    y = (torch.relu(X @ U.T) @ V.T).argmax(1)  # the net's own labels: zero training error
    m = _measures(U, V, U0, X, y, X, y)
    assert m["train_error"] == 0 and m["test_error"] == 0 and m["margin"] > 0
    assert m["neyshabur"] == neyshabur_two_layer_rademacher(U, V, U0, X, m["margin"])
    assert m["params"] == 30 * (4 + 10)
    # ℓ2 path norm of a two-layer net: sqrt(Σ_{k,j} V_kj² ‖U_j‖²)
    by_hand = float(((V ** 2) @ (U ** 2).sum(1)).sum().sqrt()) / m["margin"]
    assert m["path_norm"] == pytest.approx(by_hand, rel=1e-12)


def test_smoke_sweep_runs_and_judges():
    sweep = CLAIM.sweep("smoke")
    results = Results(Result(c, s, "ok", o.metrics, o.curves) for c in sweep.configs
                      for s, o in zip(sweep.seeds, CLAIM.run_batch(c, list(sweep.seeds), "cpu")))
    verdict = CLAIM.judge(results)
    assert verdict.passed in (True, False) and "Spearman(measure, test error)" in verdict.measured
    assert CLAIM.figure(results) is not None


def _row(h, labels, train_error, test_error, bound, seed=0):
    metrics = {"train_error": train_error, "test_error": test_error, "margin": 1.0,
               "neyshabur": bound, **{k: float(h) for k in MEASURES if k != "neyshabur"}}
    return Result({"width": h, "labels": labels}, seed, "ok", metrics, {})


# width: (train error, test error, Neyshabur bound)
GOOD = {8: (0.02, 0.10, 9.0), 16: (0.0, 0.08, 8.0), 32: (0.0, 0.07, 7.0), 64: (0.0, 0.06, 6.5),
        128: (0.0, 0.05, 6.0)}
CONTROL = (0.0, 0.9, 30.0)


def _results(table, control=CONTROL):
    rows = [_row(h, "real", *v, seed=s) for h, v in table.items() for s in range(2)]
    rows += [_row(max(table), "random", *control, seed=s) for s in range(2)]
    return Results(rows)


def test_judge_passes_when_test_error_falls_and_the_bound_does_not_grow():
    verdict = CLAIM.judge(_results(GOOD))
    assert verdict.passed is True and verdict.details["h0"] == 16
    assert verdict.details["spearman"]["neyshabur"] == pytest.approx(1.0)
    assert verdict.details["spearman"]["params"] == pytest.approx(-1.0)


@pytest.mark.parametrize("table, control, check", [
    ({**GOOD, 64: (0.01, 0.06, 6.5)}, CONTROL, "zero training error past h0"),
    ({**GOOD, 128: (0.0, 0.09, 6.0)}, CONTROL, "test error falls past h0"),
    ({**GOOD, 128: (0.0, 0.05, 9.0)}, CONTROL, "Neyshabur bound does not grow"),
    (GOOD, (0.0, 0.3, 30.0), "random labels at chance"),
    (GOOD, (0.0, 0.9, 7.0), "random labels get a larger bound"),
])
def test_judge_fails_when_the_numbers_break_the_criterion(table, control, check):
    verdict = CLAIM.judge(_results(table, control))
    assert verdict.passed is False
    assert verdict.details["checks"][check] is False and check in verdict.measured


@pytest.mark.parametrize("key, value", [("labels", "noisy"), ("train", 1790), ("width", 0),
                                         ("steps", 0), ("lr", 0.0)])
def test_bad_configs_are_refused(key, value):
    with pytest.raises(ConfigError):
        CLAIM.validate({**SHORT, key: value})
