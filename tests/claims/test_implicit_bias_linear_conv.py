import pytest
import torch

from dltheory import UserError
from dltheory.claims import Result, Results, get_claim
from dltheory.claims.implicit_bias_linear_conv import (
    conv_gradients,
    end_to_end_filter,
    fc_end_to_end,
    fc_gradients,
)

CLAIM = get_claim("implicit-bias-linear-conv")
SMOKE = CLAIM.sweep("smoke").configs[0]
SHORT = {**SMOKE, "steps": 200, "checkpoints": 4}


def _circular_conv(a, b):
    """(a ⊛ b)_k = Σ_j a_j b_{(k−j) mod d}, written out."""
    d = a.shape[-1]
    return torch.stack([sum(a[..., j] * b[..., (k - j) % d] for j in range(d)) for k in range(d)], -1)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_fft_filter_and_gradients_match_the_direct_convolution_and_autograd(depth):
    g = torch.Generator().manual_seed(depth)
    W = torch.randn(3, depth, 10, generator=g, dtype=torch.float64, requires_grad=True)
    beta = W[:, 0]
    for layer in range(1, depth):
        beta = _circular_conv(beta, W[:, layer])
    torch.testing.assert_close(end_to_end_filter(W.detach()), beta.detach())
    grad_beta = torch.randn(3, 10, generator=g, dtype=torch.float64)
    (expected,) = torch.autograd.grad((beta * grad_beta).sum(), W)
    torch.testing.assert_close(conv_gradients(W.detach(), grad_beta), expected)


@pytest.mark.parametrize("depth", [2, 3])
def test_fully_connected_filter_and_gradients_match_autograd(depth):
    g = torch.Generator().manual_seed(depth)
    Ws = [torch.randn(3, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
          for _ in range(depth - 1)]
    v = torch.randn(3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    row = v[:, None, :]
    for W in reversed(Ws):
        row = row @ W
    beta, a = fc_end_to_end([W.detach() for W in Ws], v.detach())
    torch.testing.assert_close(beta, row[:, 0].detach())
    grad_beta = torch.randn(3, 6, generator=g, dtype=torch.float64)
    expected = torch.autograd.grad((row[:, 0] * grad_beta).sum(), Ws + [v])
    for mine, ref in zip(fc_gradients([W.detach() for W in Ws], a, grad_beta), expected):
        torch.testing.assert_close(mine, ref)


def test_batched_seeds_equal_each_seed_run_alone_bit_for_bit():
    seeds = [0, 1, 2]
    together = CLAIM.run_batch(SHORT, seeds, "cpu")
    for seed, batched in zip(seeds, together):
        alone = CLAIM.run_batch(SHORT, [seed], "cpu")[0]
        assert batched.metrics == alone.metrics, seed
        assert batched.curves == alone.curves, seed
    assert together[0].metrics != together[1].metrics


def test_smoke_run_conv_nets_sparsify_in_fourier_and_fully_connected_stay_at_l2():
    seeds = CLAIM.sweep("smoke").seeds
    outcomes = CLAIM.run_batch(SMOKE, seeds, "cpu")
    verdict = CLAIM.judge(Results(Result(SMOKE, s, "ok", o.metrics, o.curves)
                                  for s, o in zip(seeds, outcomes)))
    assert verdict.passed, verdict.measured
    for o in outcomes:
        assert o.metrics["reference_kkt_residual"] < 1e-6
        assert o.metrics["fc2_distance_to_l2"] < 0.1 < o.metrics["conv2_distance_to_l2"]


def _metrics(**overrides):
    base = {}
    for name, own, other in [("conv1", "l2", "f1"), ("conv2", "f1", "l2"), ("conv3", "f1", "l2"),
                             ("fc2", "l2", "f1"), ("fc3", "l2", "f1")]:
        base.update({f"{name}_{own}_gap_T": 0.01, f"{name}_{own}_gap_T_over_10": 0.05,
                     f"{name}_{other}_gap_T": 0.3, f"{name}_{other}_gap_T_over_10": 0.3,
                     f"{name}_{own}_min_gap": 0.01, f"{name}_{other}_min_gap": 0.3,
                     f"{name}_distance_to_{own}": 0.05, f"{name}_distance_to_{other}": 0.4})
    base.update(conv1_sparsity=2.8, conv2_sparsity=2.3, conv3_sparsity=1.9, fc2_sparsity=2.8,
                fc3_sparsity=2.8, svm_l2_sparsity=2.8, svm_f1_sparsity=2.3)
    return Result(SMOKE, 0, "ok", {**base, **overrides}, {})


@pytest.mark.parametrize("bad, check", [
    (dict(conv2_f1_gap_T=0.06), "conv depth 2: Fourier-ℓ1 margin gap shrinking"),
    (dict(conv2_distance_to_f1=0.5), "conv depth 2 nearer the Fourier-ℓ1 SVM"),
    (dict(fc3_l2_gap_T=0.06), "control: fully connected ℓ2 margin gap shrinking"),
    (dict(fc2_distance_to_f1=0.01), "control: fully connected nearer the ℓ2 SVM"),
    (dict(conv3_l2_min_gap=-0.01), "no run beats an SVM margin"),
    (dict(conv3_sparsity=2.4), "Fourier sparsity grows with conv depth"),
])
def test_verdict_fails_when_any_seed_breaks_the_criterion(bad, check):
    verdict = CLAIM.judge(Results([_metrics(), _metrics(**bad)]))
    if check == "Fourier sparsity grows with conv depth":  # judged on medians
        verdict = CLAIM.judge(Results([_metrics(**bad)] * 2))
    assert verdict.passed is False
    assert verdict.details["checks"][check] is False
    assert check in verdict.measured
    assert CLAIM.judge(Results([_metrics()])).passed


@pytest.mark.parametrize("override", [
    dict(n=12), dict(n=1), dict(conv_depths=[1, 3]), dict(conv_depths=[2, 1]),
    dict(fc_depths=[1]), dict(fc_depths=[]), dict(steps=50), dict(lr=0.0), dict(init=-1.0),
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


def test_a_shallow_conv_net_padded_with_frozen_delta_filters_is_the_same_net():
    g = torch.Generator().manual_seed(7)
    W = torch.randn(3, 2, 10, generator=g, dtype=torch.float64)
    padded = torch.zeros(3, 4, 10, dtype=torch.float64)
    padded[..., 0] = 1.0  # the delta filter: DFT ≡ 1
    padded[:, :2] = W
    torch.testing.assert_close(end_to_end_filter(padded), end_to_end_filter(W), rtol=0, atol=1e-15)
    grad_beta = torch.randn(3, 10, generator=g, dtype=torch.float64)
    torch.testing.assert_close(conv_gradients(padded, grad_beta)[:, :2], conv_gradients(W, grad_beta),
                               rtol=0, atol=1e-14)
