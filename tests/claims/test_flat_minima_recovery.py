import math

import pytest

from dltheory.claims import Result, Results, get_claim
from dltheory.errors import ConfigError

CLAIM = get_claim("flat-minima-recovery")
SMOKE = CLAIM.sweep("smoke")


def _config(problem, regime):
    return next(c for c in SMOKE.configs if c["problem"] == problem and c["regime"] == regime)


def test_flattest_minimizer_recovers_and_the_control_does_not():
    results = Results()
    for problem in ("asymmetric-sensing", "matrix-sensing"):
        for regime in ("recover", "control"):
            config = _config(problem, regime)
            outcome = CLAIM.run(config, 0, "cpu")
            results.append(Result(config, 0, "ok", outcome.metrics, outcome.curves))
    for r in results.where(regime="recover"):
        assert r.metrics["flat_error"] <= 1e-3
        assert r.metrics["flat_relative_loss"] <= 1e-9
    for r in results.where(regime="control"):
        assert r.metrics["flat_error"] >= 0.1
    # asymmetric sensing has non-recovering interpolants; their error rises with the trace
    verdict = CLAIM.judge(results)
    stats = verdict.details["stats"]["asymmetric-sensing"]
    assert stats["spread"] and stats["rho"] > 0


def test_robust_pca_flattest_is_pcp_and_recovers_and_the_control_does_not():
    results = Results()
    for regime in ("recover", "control"):
        config = _config("robust-pca", regime)
        outcome = CLAIM.run(config, 0, "cpu")
        results.append(Result(config, 0, "ok", outcome.metrics, outcome.curves))
    recover, control = results.where(regime="recover")[0], results.where(regime="control")[0]
    assert recover.metrics["flat_error"] <= 1e-3 and recover.metrics["pcp_gap"] <= 1e-3
    assert control.metrics["flat_error"] >= 0.1
    checks = CLAIM.judge(results).details["checks"]
    assert checks["robust-pca: flattest is the PCP solution"] and checks["robust-pca: control fails"]


def test_runs_are_deterministic():
    config = _config("covariance", "control")
    assert CLAIM.run(config, 0, "cpu").metrics == CLAIM.run(config, 0, "cpu").metrics


def _result(problem, regime, **overrides):
    metrics = dict(m=31, flat_error=1e-6, flat_relative_loss=1e-12, flat_trace=10.0, truth_trace=10.0)
    curves = dict(scale=[0.1, 1.0, 3.0], trace=[11.0, 50.0, 200.0], error=[0.01, 0.5, 3.0],
                  relative_loss=[1e-12, 1e-12, 1e-12])
    if regime == "control":
        metrics.update(flat_error=0.7, m=8)
    if problem == "robust-pca":
        metrics["pcp_gap"] = 1e-8
    for key, value in overrides.items():
        (curves if key in curves else metrics)[key] = value
    return Result({"problem": problem, "regime": regime}, 0, "ok", metrics, curves)


def _results(bad_problem=None, bad_regime=None, every_seed=False, **bad):
    out = Results()
    for problem in ("matrix-sensing", "asymmetric-sensing", "covariance", "quadratic-net", "robust-pca"):
        for regime in ("recover", "control"):
            for seed in range(2):
                broken = problem == bad_problem and regime == bad_regime and (every_seed or seed == 1)
                out.append(_result(problem, regime, **(bad if broken else {})))
    return out


def test_good_metrics_pass():
    assert CLAIM.judge(_results()).passed is True


@pytest.mark.parametrize("regime, every_seed, bad, check", [
    ("recover", False, dict(flat_error=5e-3), "covariance: flattest recovers"),
    ("recover", False, dict(flat_relative_loss=1e-6), "covariance: flattest interpolates"),
    ("recover", True, dict(trace=[200.0, 50.0, 11.0]), "covariance: error rises with trace"),
    ("control", True, dict(flat_error=1e-4), "covariance: control fails"),  # judged on the median
    ("control", False, dict(flat_relative_loss=1e-3), "covariance: control interpolates"),
    ("recover", False, dict(pcp_gap=1e-2), "robust-pca: flattest is the PCP solution"),
])
def test_verdict_fails_when_a_check_breaks(regime, every_seed, bad, check):
    problem = check.split(":")[0]
    verdict = CLAIM.judge(_results(problem, regime, every_seed, **bad))
    assert verdict.passed is False
    assert verdict.details["checks"][check] is False
    assert check in verdict.measured


def test_no_spread_means_the_rank_check_is_not_judged_and_is_reported():
    flat = dict(error=[1e-5, 2e-5, 3e-5])
    results = Results(_result(r.config["problem"], r.config["regime"], **flat) for r in _results())
    verdict = CLAIM.judge(results)
    assert not any(k.endswith("error rises with trace") for k in verdict.details["checks"])
    assert "every interpolant recovers" in verdict.measured


@pytest.mark.parametrize("key, value", [("problem", "pca"), ("regime", "x"), ("n", 2),
                                        ("others", 2), ("iterations", 5)])
def test_bad_config_raises_config_error(key, value):
    with pytest.raises(ConfigError):
        CLAIM.validate({**_config("covariance", "recover"), key: value})


def test_non_interpolating_minimizers_are_left_out_of_the_rank_correlation():
    r = _result("covariance", "recover", relative_loss=[1e-12, 1e-3, 1e-12])
    verdict = CLAIM.judge(Results([r, _result("covariance", "control")]))
    assert verdict.details["stats"]["covariance"]["n_others"] == 2
    assert math.isnan(verdict.details["stats"]["covariance"]["rho"])  # too few to correlate ...
    assert verdict.details["checks"]["covariance: error rises with trace"] is False  # ... fails


def test_gauss_newton_reaches_a_degenerate_interpolant():
    # m ≥ n(n+1)/2: the only interpolant is the rank-one truth, a degenerate minimum of the
    # width-n factorization where first-order methods slow down; Levenberg–Marquardt does not
    import torch

    from dltheory.claims._flat_minima import gauss_newton
    from dltheory.problems import MatrixSensing

    gen = torch.Generator().manual_seed(0)
    problem = MatrixSensing(6, 1, 25, width=6, generator=gen)
    U = gauss_newton(problem.residuals, problem.init(gen, scale=1.0), iterations=60)
    assert float(problem.loss(U)) <= 1e-20 * float(problem.loss(torch.zeros(6, 6, dtype=torch.float64)))
    assert problem.recovery_error(U) <= 1e-8


def test_gauss_newton_with_closed_form_derivatives_reaches_the_interpolant_jacrev_does():
    # the Jacobian is the only difference: the same steps up to rounding, for a tensor
    # (symmetric) and a dict (asymmetric) of params, whose flattening order must match
    import torch

    from dltheory.claims._flat_minima import closed_forms, gauss_newton
    from dltheory.problems import AsymmetricMatrixSensing, FactoredRobustPCA, MatrixSensing

    gen = torch.Generator().manual_seed(1)
    for problem in (MatrixSensing(6, 1, 25, width=6, generator=gen),
                    AsymmetricMatrixSensing(6, 5, 1, 25, width=3, balance=0.0, generator=gen),
                    FactoredRobustPCA(6, 5, 1, 0.1, width=3, generator=gen)):  # with J Jᵀ too
        init = problem.init(gen, scale=1.0)
        auto = gauss_newton(problem.residuals, init, iterations=40)
        closed = gauss_newton(problem.residuals, init, iterations=40, **closed_forms(problem))
        assert float(problem.loss(closed)) <= 1e-20
        for key in (init if isinstance(init, dict) else [None]):
            a, c = (auto, closed) if key is None else (auto[key], closed[key])
            # measured ≤ 3e-9: rounding moves the point along the interpolating set,
            # which Gauss–Newton does not contract; a misordered J is O(1) off or diverges
            torch.testing.assert_close(c, a, rtol=0, atol=1e-6)
