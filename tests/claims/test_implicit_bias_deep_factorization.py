import pytest
import torch

from dltheory import UserError
from dltheory.claims import Result, Results, get_claim
from dltheory.claims.implicit_bias_deep_factorization import _gd_step, judged_count

CLAIM = get_claim("implicit-bias-deep-factorization")
SMOKE = CLAIM.sweep("smoke").configs[0]
SHORT = {**SMOKE, "n": 10, "observations": [30, 50], "steps": 150, "checkpoints": 4}


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_gd_step_follows_the_autograd_gradient_of_the_completion_loss(depth):
    g = torch.Generator().manual_seed(depth)
    Ws = [torch.randn(2, 5, 5, generator=g, dtype=torch.float64) for _ in range(depth)]
    M = torch.randn(2, 5, 5, generator=g, dtype=torch.float64)
    mask = (torch.rand(2, 5, 5, generator=g) < 0.5).double()
    X = [W.clone().requires_grad_() for W in Ws]
    W_e = X[0]
    for W in X[1:]:
        W_e = W @ W_e
    grads = torch.autograd.grad(0.5 * (mask * (W_e - M)).square().sum(), X)
    for W, new, grad in zip(Ws, _gd_step(Ws, mask, M, 0.1), grads):
        torch.testing.assert_close(new, W - 0.1 * grad)


def test_batched_seeds_equal_each_seed_run_alone_bit_for_bit():
    seeds = [0, 1, 2]
    together = CLAIM.run_batch(SHORT, seeds, "cpu")
    for seed, batched in zip(seeds, together):
        alone = CLAIM.run_batch(SHORT, [seed], "cpu")[0]
        assert batched.metrics == alone.metrics, seed
        assert batched.curves == alone.curves, seed
    assert together[0].metrics != together[1].metrics


def test_smoke_run_deeper_factorizations_recover_with_fewer_entries():
    seeds = CLAIM.sweep("smoke").seeds
    outcomes = CLAIM.run_batch(SMOKE, seeds, "cpu")
    verdict = CLAIM.judge(Results(Result(SMOKE, s, "ok", o.metrics, o.curves)
                                  for s, o in zip(seeds, outcomes)))
    assert verdict.passed, verdict.measured
    m0 = judged_count(SMOKE)
    for o in outcomes:
        assert o.metrics["nuclear_gap"] < 1e-6
        assert o.metrics[f"L3_m{m0}_error"] < o.metrics[f"L2_m{m0}_error"]


def test_judged_count_is_the_grid_point_nearest_twice_the_degrees_of_freedom():
    assert judged_count(dict(n=20, rank=2, observations=[115, 150, 230])) == 150  # 2·76 = 152
    assert judged_count(dict(n=100, rank=5, observations=[1500, 2000, 4000])) == 2000


def _metrics(**overrides):
    m0, m1 = SMOKE["observations"]
    base = {"L1_closed_form_gap": 1e-15, "m46_identifiable": True}
    for m in (m0, m1):
        base.update({f"nuc_m{m}_error": 0.4, f"nuc_m{m}_erank": 2.0})
        for L, (err, erank) in zip(SMOKE["depths"], [(0.8, 8.0), (0.4, 2.0), (0.05, 1.2), (0.04, 1.1)]):
            base.update({f"L{L}_m{m}_error": err, f"L{L}_m{m}_erank": erank, f"L{L}_m{m}_fit": 1e-4,
                         f"L{L}_m{m}_schatten_ratio": 1.0, f"L{L}_m{m}_nuclear_ratio": 1.01})
    return Result(SMOKE, 0, "ok", {**base, **overrides}, {})


@pytest.mark.parametrize("bad, check", [
    (dict(L3_m46_error=0.5), "depth ≥ 3 recovers better at m₀"),
    (dict(L4_m46_error=0.45, nuc_m46_error=0.3), "depth ≥ 3 recovers better at m₀"),
    (dict(L4_m46_erank=1.3), "effective rank falls with depth"),
    (dict(L2_m46_erank=9.0), "effective rank falls with depth"),
    (dict(L4_m70_fit=0.02), "every depth ≥ 2 run interpolates"),
    (dict(L2_m70_nuclear_ratio=0.99), "depth 2 does not beat the nuclear norm optimum"),
    (dict(L1_closed_form_gap=1e-6), "control: depth 1 is the min-Frobenius interpolant"),
    (dict(L1_m46_error=0.3), "control: depth 1 recovers worse than depth 2 at m₀"),
])
def test_verdict_fails_when_the_numbers_break_the_criterion(bad, check):
    verdict = CLAIM.judge(Results([_metrics(**bad)] * 3))
    assert verdict.passed is False
    assert verdict.details["checks"][check] is False
    assert check in verdict.measured
    assert CLAIM.judge(Results([_metrics()] * 3)).passed


@pytest.mark.parametrize("override", [
    dict(rank=12), dict(observations=[70, 46]), dict(observations=[0, 46]),
    dict(observations=[46, 200]), dict(depths=[1, 2]), dict(depths=[1, 2, 3, 9]),
    dict(steps=5), dict(init_scale=1.0), dict(lr_scale=2.0),
])
def test_bad_configs_are_refused_with_a_user_error(override):
    with pytest.raises(UserError):
        CLAIM.validate({**SMOKE, **override})


def test_figure_draws():
    seeds = [0, 1]
    outcomes = CLAIM.run_batch(SHORT, seeds, "cpu")
    fig = CLAIM.figure(Results(Result(SHORT, s, "ok", o.metrics, o.curves)
                               for s, o in zip(seeds, outcomes)))
    assert len(fig.axes) == 3
