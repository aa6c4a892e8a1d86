import pytest

from dltheory.claims import Result, Results, get_claim
from dltheory.errors import ConfigError

CLAIM = get_claim("gd-avoids-strict-saddles")


def test_smoke_verdict_passes_and_control_ends_at_the_saddle():
    sweep = CLAIM.sweep("smoke")
    results = Results()
    for config in sweep.configs:
        for seed in sweep.seeds:
            o = CLAIM.run(config, seed, "cpu")
            results.append(Result(config, seed, "ok", o.metrics, o.curves))
            assert o.metrics["minimizer_fraction"] == 1.0, config["method"]
            assert o.metrics["control_saddle_fraction"] == 1.0, config["method"]
            assert o.metrics["control_max_lambda_min"] < 0 < o.metrics["min_lambda_min"]
    verdict = CLAIM.judge(results)
    assert verdict.passed, verdict.measured


def test_quick_has_at_least_200_random_starts_per_method():
    sweep = CLAIM.sweep("quick")
    assert {c["method"] for c in sweep.configs} == {"gd", "coordinate", "mirror", "admm", "riemannian"}
    for c in sweep.configs:
        assert c["starts"] * len(sweep.seeds) >= 200


def _result(method="gd", **overrides):
    base = dict(starts=10, minimizer_fraction=1.0, min_lambda_min=1.0, max_grad_norm=0.0,
                hessian_closed_form_error=0.0, control_starts=2, control_saddle_fraction=1.0,
                control_max_lambda_min=-1.0)
    return Result({"method": method}, 0, "ok", {**base, **overrides}, {})


@pytest.mark.parametrize("bad, check", [
    (dict(minimizer_fraction=0.9), "gd: every start → a minimizer"),
    (dict(min_lambda_min=-0.5), "gd: λ_min ≥ −tol at every limit"),
    (dict(hessian_closed_form_error=1e-3), "gd: Hessian agrees with the closed form"),
    (dict(control_saddle_fraction=0.5), "gd: control → a strict saddle"),
])
def test_verdict_fails_when_any_run_breaks_the_criterion(bad, check):
    verdict = CLAIM.judge(Results([_result(), _result("mirror"), _result(**bad)]))
    assert verdict.passed is False
    assert verdict.details["checks"][check] is False
    assert check in verdict.measured
    assert all(ok for k, ok in verdict.details["checks"].items() if not k.startswith("gd"))


def test_bad_config_raises_config_error():
    config = CLAIM.sweep("smoke").configs[0]
    with pytest.raises(ConfigError):
        CLAIM.validate({**config, "lr_scale": 1.5})
    with pytest.raises(ConfigError):
        CLAIM.validate({**config, "method": "newton"})
