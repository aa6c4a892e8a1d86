import numpy as np
import pytest
import torch

from dltheory.claims import Result, Results, get_claim
from dltheory.claims.subgradient_sgd_stationarity import goldstein_gap

CLAIM = get_claim("subgradient-sgd-stationarity")


def test_goldstein_gap_is_zero_at_a_kink_and_the_gradient_norm_away_from_one():
    loss = lambda x, idx=None: x.abs().sum()  # noqa: E731 — the kink set is x = 0
    gen = torch.Generator().manual_seed(0)
    at_kink = goldstein_gap(loss, torch.zeros(2, dtype=torch.float64), 0.1, 64, gen)
    away = goldstein_gap(loss, torch.tensor([1.0, -1.0], dtype=torch.float64), 0.1, 16, gen)
    assert at_kink < 0.05
    assert away == pytest.approx(np.sqrt(2), rel=1e-6)


def test_smoke_phase_retrieval_reaches_stationarity_and_the_constant_step_does_not():
    config = next(c for c in CLAIM.sweep("smoke").configs if c["problem"] == "phase-retrieval")
    m = CLAIM.run(config, 0, "cpu").metrics
    assert m["gap_T"] <= 0.1 * m["gap_first"]
    assert m["control_gap_T"] >= 5 * m["gap_T"]
    assert m["distance_to_signal"] < 0.1


def _r(**kw):
    base = dict(gap_first=1.0, gap_T=0.05, gap_rate_exponent=-0.5, control_gap_half=1.0,
                control_gap_T=1.0, final_loss=0.0)
    return Result({"problem": "relu-regression"}, 0, "ok", {**base, **kw}, {})


@pytest.mark.parametrize("bad, check", [
    (dict(gap_T=0.2), "gap falls ≥ 10×"),
    (dict(control_gap_T=0.1), "control stalls"),
    (dict(control_gap_T=0.4, control_gap_half=1.0), "control stalls"),
])
def test_verdict_fails_when_a_check_breaks(bad, check):
    verdict = CLAIM.judge(Results([_r(), _r(**bad)]))
    assert verdict.passed is False and verdict.details["checks"][check] is False
    assert CLAIM.judge(Results([_r()])).passed is True
