import numpy as np
import pytest
import torch

from dltheory.claims import Result, Results, get_claim
from dltheory.claims.regularized_ce_max_margin import (
    CONTROL_MAX,
    WIDTH_SLACK,
    _revive,
    balanced_margin,
    comparator_objective,
    loss_and_grad,
    normalized_margin,
)
from dltheory.errors import ConfigError

CLAIM = get_claim("regularized-ce-max-margin")
SMOKE = CLAIM.sweep("smoke").configs[0]


def _data(n=9, seed=0):
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0, 2 * np.pi, n)
    return np.stack([np.cos(theta), np.sin(theta)], 1), np.where(rng.random(n) < 0.5, -1.0, 1.0)


@pytest.mark.parametrize("train_inner", [True, False])
def test_closed_form_gradient_matches_autograd(train_inner):
    X, y = _data()
    m, lam = 4, 0.03
    rng = np.random.default_rng(1)
    W0 = rng.standard_normal((m, 2))
    theta = rng.standard_normal(3 * m if train_inner else m)
    loss, grad = loss_and_grad(theta, X, y, lam, m, train_inner, W0)
    t = torch.tensor(theta, requires_grad=True)
    a = t[:m]
    W = t[m:].reshape(m, 2) if train_inner else torch.tensor(W0)
    f = torch.relu(torch.tensor(X) @ W.T) @ a
    ref = torch.nn.functional.softplus(-torch.tensor(y) * f).mean() + lam * (a @ a + (W ** 2).sum())
    ref.backward()
    assert loss == pytest.approx(float(ref.detach()), rel=1e-12)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_margins_are_scale_free_and_balancing_never_lowers_them():
    X, y = _data()
    rng = np.random.default_rng(2)
    a, W = rng.standard_normal(5), rng.standard_normal((5, 2))
    assert normalized_margin(3 * a, 3 * W, X, y) == pytest.approx(normalized_margin(a, W, X, y))
    g, gb = normalized_margin(a, W, X, y), balanced_margin(a, W, X, y)
    assert (gb >= g) if g > 0 else (gb <= g)  # 2Σ|a_r|‖w_r‖ ≤ ‖Θ‖²


def test_comparator_objective_is_the_best_rescaling():
    q = np.array([0.1, 0.2, 0.3])
    best = comparator_objective(q, 1e-3)
    for log_b2 in np.linspace(-5, 10, 200):
        assert best <= np.logaddexp(0, -np.exp(log_b2) * q).mean() + 1e-3 * np.exp(log_b2) + 1e-12


def test_dead_units_restart_from_their_initialization():
    init = np.arange(1.0, 10.0)  # m = 3: a = (1, 2, 3), W = rows of 4..9
    theta = np.concatenate([[0.0, 5.0, 0.0], [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]])
    out = _revive(theta, init, 3)
    np.testing.assert_array_equal(out, [1.0, 5.0, 3.0, 4.0, 5.0, 1.0, 1.0, 8.0, 9.0])


def test_smoke_margin_approaches_the_certified_optimum():
    seeds = CLAIM.sweep("smoke").seeds
    outcomes = [CLAIM.run(SMOKE, s, "cpu") for s in seeds]
    results = Results(Result(SMOKE, s, "ok", o.metrics, o.curves) for s, o in zip(seeds, outcomes))
    verdict = CLAIM.judge(results)
    assert verdict.passed, verdict.measured
    assert CLAIM.figure(results).axes
    for o in outcomes:
        assert o.metrics["gamma_star"] <= o.metrics["gamma_upper"]
        assert all(b <= 1 for b in o.curves["theory_ratio_bound"])


def _metrics(**overrides):
    base = dict(gamma_star=0.1, gamma_upper=0.10001, reference_gap=1e-4, reference_kkt_residual=1e-9,
                max_margin_over_upper=0.95, objective_excess=-0.01, gap_lam_max=0.3, gap_lam_min=0.05,
                control_ratio_lam_min=0.4, ratio_lam_min=0.95,
                best_margin_m2=0.0, best_margin_m4=0.05, best_margin_m11=0.095)
    return Result(SMOKE, 0, "ok", {**base, **overrides}, {})


@pytest.mark.parametrize("bad, check", [
    (dict(reference_gap=0.01), "reference certified"),
    (dict(max_margin_over_upper=1.01), "no margin above the certified γ*"),
    (dict(objective_excess=0.01), "reaches the reference network's objective"),
    (dict(gap_lam_min=0.2), "margin gap shrinks as λ → 0"),
    (dict(best_margin_m4=0.095 + 2 * WIDTH_SLACK * 0.1), "γ*_m non-decreasing in width"),
    (dict(control_ratio_lam_min=CONTROL_MAX + 0.01), "control below"),
    (dict(control_ratio_lam_min=0.85, ratio_lam_min=0.8), "control below"),
])
def test_verdict_fails_when_any_seed_breaks_the_criterion(bad, check):
    verdict = CLAIM.judge(Results([_metrics(), _metrics(**bad)]))
    assert verdict.passed is False
    assert verdict.details["checks"][check] is False
    assert check in verdict.measured
    assert CLAIM.judge(Results([_metrics()])).passed


@pytest.mark.parametrize("bad, message", [
    (dict(widths=[2, 4, 8]), "ending at >= n \\+ 1"),
    (dict(widths=[4, 2, 11]), "increasing"),
    (dict(lams=[1e-3, 1e-2]), "decreasing"),
    (dict(lams=[1e-2]), ">= 2"),
    (dict(teacher_units=2), "odd"),
    (dict(restarts=0), "restarts >= 1"),
])
def test_bad_configs_are_one_line_errors(bad, message):
    with pytest.raises(ConfigError, match=message):
        CLAIM.validate({**SMOKE, **bad})
