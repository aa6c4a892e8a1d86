import math

import pytest
import torch
import torch.nn.functional as F

from dltheory import UserError
from dltheory.claims import Result, Results, get_claim
from dltheory.claims.implicit_bias_homogeneous_margin import (
    forward,
    log_logistic_loss,
    smoothed_margin,
)

CLAIM = get_claim("implicit-bias-homogeneous-margin")
SMOKE = CLAIM.sweep("smoke").configs[0]
SHORT = {**SMOKE, "steps": 150, "checkpoints": 4, "restarts": 2}


def test_log_loss_is_exact_where_direct_and_finite_where_the_loss_underflows():
    q = torch.tensor([[-3.0, 0.0, 0.5, 5.0, 30.0]], dtype=torch.float64)
    torch.testing.assert_close(log_logistic_loss(q), torch.log(F.softplus(-q).sum(-1)))
    huge = torch.tensor([[800.0, 900.0]], dtype=torch.float64)  # e^{−800} underflows
    torch.testing.assert_close(log_logistic_loss(huge), torch.logsumexp(-huge, -1))


def test_smoothed_margin_is_a_lower_bound_of_the_normalized_margin():
    gen = torch.Generator().manual_seed(0)
    for L in (2, 3):
        params = [torch.randn(1, 4, 3, generator=gen, dtype=torch.float64)] + \
                 [torch.randn(1, 4, 4, generator=gen, dtype=torch.float64)] * (L - 2) + \
                 [torch.randn(1, 4, generator=gen, dtype=torch.float64)]
        X = torch.randn(6, 3, generator=gen, dtype=torch.float64)
        y = torch.sign(forward(params, X))[0]
        for c in (1.0, 10.0, 100.0):
            scaled = [c * p for p in params]
            q = y * forward(scaled, X)
            norm = torch.sqrt(sum((p ** 2).sum() for p in scaled))
            gamma = float(q.min() / norm ** L)
            assert math.isclose(float(forward(scaled, X)[0, 0]), c ** L * float(forward(params, X)[0, 0]))
            if float(log_logistic_loss(q)) < math.log(math.log(2)):
                assert float(smoothed_margin(log_logistic_loss(q), norm, L)) <= gamma


@pytest.mark.parametrize("shape", [{}, {"n": 32, "d": 8, "width": 32}], ids=["smoke", "quick"])
def test_batched_seeds_equal_each_seed_run_alone_bit_for_bit(shape):
    # The quick profile's shape failed this with plain batched GEMMs and softplus (the
    # control's KKT residual and margin differed in the last bits): seed_matmul, seed_map.
    config = {**SHORT, **shape}
    seeds = [0, 1, 2]
    together = CLAIM.run_batch(config, seeds, "cpu")
    for seed, batched in zip(seeds, together):
        alone = CLAIM.run_batch(config, [seed], "cpu")[0]
        assert repr(batched.metrics) == repr(alone.metrics), seed
        assert repr(batched.curves) == repr(alone.curves), seed
    assert repr(together[0].metrics) != repr(together[1].metrics)


def test_smoke_run_raises_the_margin_nears_kkt_and_the_control_stays_off():
    seeds = CLAIM.sweep("smoke").seeds
    outcomes = CLAIM.run_batch(SMOKE, seeds, "cpu")
    verdict = CLAIM.judge(Results(Result(SMOKE, s, "ok", o.metrics, o.curves)
                                  for s, o in zip(seeds, outcomes)))
    for L in SMOKE["depths"]:
        for o in outcomes:
            assert o.metrics[f"L{L}_separated_at"] >= 0
            assert o.metrics[f"L{L}_worst_checkpoint_change"] >= -1e-12
            assert o.metrics[f"L{L}_control_kkt"] > o.metrics[f"L{L}_kkt_T"]
    assert verdict.passed, verdict.measured


def _metrics(**overrides):
    base = {}
    for L in SMOKE["depths"]:
        p = f"L{L}_"
        base.update({p + "separated_at": 10, p + "worst_smoothed_change": -1e-6,
                     p + "worst_checkpoint_change": 1e-3,
                     p + "smoothed_T": 0.09, p + "gamma_T": 0.1, p + "kkt_first": 0.5,
                     p + "kkt_T_over_10": 0.3, p + "kkt_T": 0.2, p + "control_kkt": 0.9,
                     p + "gamma_over_best_restart": 0.95, p + "gamma_over_linear_net": 1.5})
    return Result(SMOKE, 0, "ok", {**base, **overrides}, {})


@pytest.mark.parametrize("bad, check", [
    (dict(L2_separated_at=-1), "separates"),
    (dict(L3_worst_checkpoint_change=-1e-9), "smoothed margin monotone"),
    (dict(L2_smoothed_T=0.11), "smoothed ≤ normalized margin"),
    (dict(L3_kkt_T=0.35), "KKT residual decreasing"),
    (dict(L2_control_kkt=0.3), "control stays off KKT"),
])
def test_verdict_fails_when_any_seed_breaks_the_criterion(bad, check):
    verdict = CLAIM.judge(Results([_metrics(), _metrics(**bad)]))
    assert verdict.passed is False
    assert verdict.details["checks"][check] is False
    assert check in verdict.measured
    assert CLAIM.judge(Results([_metrics()])).passed


@pytest.mark.parametrize("bad", [
    dict(n=1), dict(depths=[5]), dict(depths=[]), dict(steps=10), dict(restarts=0), dict(dq=0.0),
])
def test_bad_configs_raise_a_user_error(bad):
    with pytest.raises(UserError):
        CLAIM.validate({**SMOKE, **bad})
