import pytest
import torch

from dltheory.claims import Result, Results, get_claim
from dltheory.claims.meanfield_noisy_gd import CONTROL_STALL, TOL, _gradient, _objective
from dltheory.errors import ConfigError

CLAIM = get_claim("meanfield-noisy-gd")
SMOKE = CLAIM.sweep("smoke").configs[0]
SHORT = {**SMOKE, "steps": 150, "checkpoints": 3, "grid": 90}


def test_objective_is_the_mean_field_loss_of_each_seed():
    g = torch.Generator().manual_seed(0)
    a, W = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(3, 5, 2, generator=g,
                                                                             dtype=torch.float64)
    X, y = torch.randn(3, 7, 2, generator=g, dtype=torch.float64), torch.randn(3, 7, generator=g,
                                                                              dtype=torch.float64)
    F = _objective(a, W, X, y, 0.1)
    for s in range(3):
        f = torch.stack([sum(a[s, r] * torch.relu(W[s, r] @ x) for r in range(5)) / 5 for x in X[s]])
        expected = ((f - y[s]) ** 2).mean() / 2 + 0.1 / 10 * (a[s] @ a[s] + (W[s] ** 2).sum())
        torch.testing.assert_close(F[s], expected)


def test_closed_form_gradient_is_autograds_gradient_of_m_times_F():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, 16, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(3, 16, 2, generator=g, dtype=torch.float64, requires_grad=True)
    X, y = torch.randn(3, 9, 2, generator=g, dtype=torch.float64), torch.randn(3, 9, generator=g,
                                                                              dtype=torch.float64)
    (16 * _objective(a, W, X, y, 0.05).sum()).backward()
    grad_a, grad_W = _gradient(a.detach(), W.detach(), X, y, 0.05)
    torch.testing.assert_close(grad_a, a.grad, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad_W, W.grad, rtol=1e-12, atol=1e-14)


def test_batched_seeds_equal_each_seed_run_alone_bit_for_bit():
    together = CLAIM.run_batch(SHORT, [0, 1], "cpu")
    for seed, batched in zip([0, 1], together):
        alone = CLAIM.run_batch(SHORT, [seed], "cpu")[0]
        assert batched.metrics == alone.metrics, seed
        assert batched.curves == alone.curves, seed
    assert together[0].metrics != together[1].metrics


def test_smoke_noisy_gd_reaches_the_certified_optimum_and_the_control_stalls():
    seeds = CLAIM.sweep("smoke").seeds
    outcomes = CLAIM.run_batch(SMOKE, seeds, "cpu")
    results = Results(Result(SMOKE, s, "ok", o.metrics, o.curves) for s, o in zip(seeds, outcomes))
    verdict = CLAIM.judge(results)
    assert verdict.passed, verdict.measured
    assert CLAIM.figure(results).axes
    for o in outcomes:
        assert o.metrics["F_lower_bound"] <= o.metrics["F_reference"]
        assert o.metrics["noisy_directions"] > 2  # the noise split the two initial directions


def _metrics(**overrides):
    base = dict(reference_kkt_residual=1e-10, reference_gap=1e-5, grid_refinement_change=1e-5,
                F_reference=0.03, F_lower_bound=0.02999, F_noisy=0.0301, F_control=0.1,
                noisy_gap=TOL / 3, control_gap=3 * CONTROL_STALL, noisy_directions=10,
                reference_atoms=8, beta_final=1e6)
    return Result(SMOKE, 0, "ok", {**base, **overrides}, {})


@pytest.mark.parametrize("bad, check", [
    (dict(reference_gap=0.01), "reference certified"),
    (dict(grid_refinement_change=0.01), "reference certified"),
    (dict(noisy_gap=2 * TOL), "noisy GD within tolerance"),
    (dict(F_noisy=0.0299), "noisy GD above the lower bound"),
    (dict(control_gap=CONTROL_STALL / 2), "control stalls above"),
])
def test_verdict_fails_when_any_seed_breaks_the_criterion(bad, check):
    verdict = CLAIM.judge(Results([_metrics(), _metrics(**bad)]))
    assert verdict.passed is False
    assert verdict.details["checks"][check] is False
    assert check in verdict.measured
    assert CLAIM.judge(Results([_metrics()])).passed


@pytest.mark.parametrize("bad, message", [
    (dict(m=1), "m must be >= 2"),
    (dict(lam=0.0), "lam must be > 0"),
    (dict(beta0=1e6, beta1=1e3), "beta1 must be >= beta0"),
    (dict(teacher_units=4), "teacher_units must be odd"),
])
def test_bad_configs_are_one_line_errors(bad, message):
    with pytest.raises(ConfigError, match=message):
        CLAIM.validate({**SMOKE, **bad})
