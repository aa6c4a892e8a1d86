import pytest

from dltheory.claims import Result, Results, get_claim

CLAIM = get_claim("convac-depth-efficiency")
SMOKE = CLAIM.sweep("smoke")


def test_smoke_deep_rank_is_r_to_the_n_over_2_and_shallow_rank_at_most_z():
    results = Results()
    for config in SMOKE.configs:
        for seed in SMOKE.seeds:
            o = CLAIM.run(config, seed, "cpu")
            results.append(Result(config, seed, "ok", o.metrics, o.curves))
            assert o.metrics["deep_rank"] == config["r"] ** (config["N"] // 2)
            assert o.metrics["diagonal_rank"] == o.metrics["deep_rank"]
            assert o.metrics["diagonal_certified"] and o.metrics["diagonal_residual"] < 1e-12
            for z in config["controls"]:
                assert o.metrics[f"control_rank_Z{z}"] == z
            for res, ey in zip(o.curves.get("fit_residual", []), o.curves.get("eckart_young", [])):
                assert res >= ey - 1e-9
    verdict = CLAIM.judge(results)
    assert verdict.passed, verdict.measured


def test_runs_are_deterministic():
    config = SMOKE.configs[-1]  # N=8, r=2, no fit
    assert CLAIM.run(config, 1, "cpu").curves == CLAIM.run(config, 1, "cpu").curves


def _result(config=None, curves=None, **overrides):
    config = config or dict(N=4, r=2, controls=[3], fit_widths=[1, 4])
    base = dict(deep_rank=4, deep_margin_log10=8.0, bound=4, deep_condition_log10=3.0,
                diagonal_rank=4, diagonal_certified=True,
                control_rank_Z3=3, control_margin_log10_Z3=10.0, tau_over_sigma1=1e-15)
    curves = curves or dict(fit_width=[1, 4], fit_residual=[0.2, 1e-4], eckart_young=[0.1, 0.0])
    return Result(config, 0, "ok", {**base, **overrides}, curves)


@pytest.mark.parametrize("bad, check", [
    (dict(deep_rank=3), "deep rank = r^(N/2)"),
    (dict(diagonal_rank=3), "deep rank = r^(N/2)"),
    (dict(control_rank_Z3=4), "control rank ≤ Z"),
    (dict(control_margin_log10_Z3=1.0), "control rank ≤ Z"),
])
def test_verdict_fails_when_a_run_breaks_the_criterion(bad, check):
    verdict = CLAIM.judge(Results([_result(), _result(**bad)]))
    assert verdict.passed is False
    assert verdict.details["checks"][check] is False
    assert check in verdict.measured


def test_verdict_fails_when_a_fit_beats_eckart_young_or_nothing_is_certified():
    below = _result(curves=dict(fit_width=[1, 4], fit_residual=[0.05, 0.0],
                                eckart_young=[0.1, 0.0]))
    assert CLAIM.judge(Results([_result(), below])).details["checks"][
        "fit residual ≥ Eckart–Young"] is False
    uncertain = _result(deep_rank=3, deep_margin_log10=0.5, diagonal_rank=3,
                        diagonal_certified=False)  # not counted, but a run must be certified
    verdict = CLAIM.judge(Results([_result(), uncertain]))
    assert verdict.passed is False and verdict.details["checks"]["deep rank = r^(N/2)"]
    assert verdict.details["checks"]["every run certified"] is False
    svd_only = _result(diagonal_rank=3, diagonal_certified=False)
    assert CLAIM.judge(Results([svd_only])).passed
