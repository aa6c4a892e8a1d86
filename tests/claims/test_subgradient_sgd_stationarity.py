import pytest
import torch
from torch.func import grad, vmap

from dltheory import ConfigError
from dltheory.claims import Result, Results, get_claim
from dltheory.claims.subgradient_sgd_stationarity import (
    _phase_gradients,
    _phase_retrieval,
    _phase_subgradient,
    _relu_gradients,
    _relu_regression,
    _relu_subgradient,
)

CLAIM = get_claim("subgradient-sgd-stationarity")


def _smoke(which, **over):
    return {**next(c for c in CLAIM.sweep("smoke").configs if c["problem"] == which), **over}


@pytest.mark.parametrize("make, subgradient, problem", [
    (_phase_retrieval, _phase_subgradient, "phase-retrieval"),
    (_relu_regression, _relu_subgradient, "relu-regression"),
])
def test_closed_form_subgradient_equals_autograd_off_the_kinks(make, subgradient, problem):
    gen = torch.Generator().manual_seed(1)
    p = make(_smoke(problem), gen, "cpu")
    x = p.init + 0.1 * torch.randn(p.init.shape, generator=gen, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    (reference,) = torch.autograd.grad(p.loss(xr), xr)
    ours = subgradient(x[None], *(v[None] for v in p.data))[0]
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("make, gradients, problem", [
    (_phase_retrieval, _phase_gradients, "phase-retrieval"),
    (_relu_regression, _relu_gradients, "relu-regression"),
])
def test_certificate_gradients_equal_autograd_and_each_seed_alone(make, gradients, problem):
    # the Goldstein certificate's batched closed-form gradients of the full loss, at 5 points
    # per seed for 3 seeds: equal to torch.func's to round-off, and bit for bit what a seed
    # gets alone
    gen = torch.Generator().manual_seed(1)
    ps = [make(_smoke(problem), torch.Generator().manual_seed(s), "cpu") for s in range(3)]
    Y = torch.stack([p.init + 0.1 * torch.randn(5, p.init.numel(), generator=gen, dtype=torch.float64)
                     for p in ps])
    data = [torch.stack(t) for t in zip(*(p.data for p in ps))]
    ours = gradients(Y, *data)
    reference = torch.stack([vmap(grad(p.loss))(y) for p, y in zip(ps, Y)])
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-14)
    for s in range(3):
        assert torch.equal(gradients(Y[s:s + 1], *(v[s:s + 1] for v in data))[0], ours[s])


def test_smoke_phase_retrieval_reaches_stationarity_and_the_constant_step_does_not():
    m = CLAIM.run(_smoke("phase-retrieval"), 0, "cpu").metrics
    assert m["gap_T"] <= 0.1 * m["gap_first"]
    assert m["control_gap_T"] >= 5 * m["gap_T"]
    assert m["distance_to_signal"] < 0.1


@pytest.mark.parametrize("problem", ["phase-retrieval", "relu-regression"])
def test_batched_seeds_equal_each_seed_run_alone_bit_for_bit(problem):
    config = _smoke(problem, steps=400, checkpoints=3)
    together = CLAIM.run_batch(config, [0, 1, 2], "cpu")
    for seed, batched in zip([0, 1, 2], together):
        (alone,) = CLAIM.run_batch(config, [seed], "cpu")
        assert batched.metrics == alone.metrics, seed
        assert batched.curves == alone.curves, seed


@pytest.mark.parametrize("bad", [dict(problem="lasso"), dict(steps=10), dict(checkpoints=2),
                                 dict(eta0=0.0), dict(radius=-1.0), dict(batch=0),
                                 dict(samples_per_dim=0)])
def test_bad_config_raises_a_config_error(bad):
    with pytest.raises(ConfigError):
        CLAIM.validate(_smoke("phase-retrieval", **bad))


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
