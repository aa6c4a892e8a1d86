import pytest
import torch

from dltheory import UserError
from dltheory.claims import Result, Results, get_claim
from dltheory.claims.implicit_bias_matrix_factorization import (
    _problem,
    quadratic_net_gradient,
    sensing_gradient,
)

CLAIM = get_claim("implicit-bias-matrix-factorization")
SMOKE = CLAIM.sweep("smoke").configs[0]
SHORT = {**SMOKE, "steps": 200, "checkpoints": 4}


@pytest.mark.parametrize("problem", ["sensing", "quadratic-net"])
def test_batched_gradient_is_the_gradient_of_the_problems_loss(problem):
    config = {**SMOKE, "problem": problem}
    p, S = _problem(config, torch.Generator().manual_seed(0))
    U = p.init(torch.Generator().manual_seed(1))
    U = U.mT if problem == "quadratic-net" else U
    X = U.detach().clone().requires_grad_()
    loss = p.loss(X.mT if problem == "quadratic-net" else X)
    (expected,) = torch.autograd.grad(loss, X)
    _, grad = sensing_gradient(S[None], p.y[None], U[None, None])
    torch.testing.assert_close(grad[0, 0], expected)


def test_rank_one_gradient_equals_the_dense_one_for_the_quadratic_net():
    config = {**SMOKE, "problem": "quadratic-net"}
    problems = [_problem(config, torch.Generator().manual_seed(s)) for s in (0, 1)]
    X, S, y = (torch.stack(t) for t in zip(*[(p.X, A, p.y) for p, A in problems]))
    U = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=X.dtype)
    for got, want in zip(quadratic_net_gradient(X, y, U), sensing_gradient(S, y, U)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("problem", ["sensing", "quadratic-net"])
def test_batched_seeds_equal_each_seed_run_alone_bit_for_bit(problem):
    seeds, config = [0, 1], {**SHORT, "problem": problem}
    together = CLAIM.run_batch(config, seeds, "cpu")
    for seed, batched in zip(seeds, together):
        alone = CLAIM.run_batch(config, [seed], "cpu")[0]
        assert batched.metrics == alone.metrics, seed
        assert batched.curves == alone.curves, seed
    assert together[0].metrics != together[1].metrics


def test_sensing_seeds_run_in_cache_sized_groups_with_the_same_numbers(monkeypatch):
    # groups of 2 seeds (one smoke seed's measurements: 20 · 8² doubles): 3 seeds run as
    # [0, 1] and [2], and get what they get in one batch and alone
    import dltheory.claims.implicit_bias_matrix_factorization as module

    seeds, config = [0, 1, 2], {**SHORT, "problem": "sensing"}
    whole = CLAIM.run_batch(config, seeds, "cpu")
    calls = []
    run = module.ImplicitBiasMatrixFactorization._run_batch
    monkeypatch.setattr(module, "_GROUP_BYTES", 2 * 8 * config["measurements"] * config["n"] ** 2)
    monkeypatch.setattr(module.ImplicitBiasMatrixFactorization, "_run_batch",
                        lambda self, c, s, d: calls.append(list(s)) or run(self, c, s, d))
    grouped = CLAIM.run_batch(config, seeds, "cpu")
    assert calls == [[0, 1], [2]]
    assert [o.metrics for o in grouped] == [o.metrics for o in whole]
    assert [o.curves for o in grouped] == [o.curves for o in whole]


def test_smoke_run_reaches_min_nuclear_norm_and_the_control_does_not():
    seeds = CLAIM.sweep("smoke").seeds
    outcomes = CLAIM.run_batch(SMOKE, seeds, "cpu")
    verdict = CLAIM.judge(Results(Result(SMOKE, s, "ok", o.metrics, o.curves)
                                  for s, o in zip(seeds, outcomes)))
    assert verdict.passed, verdict.measured
    for o in outcomes:
        assert o.metrics["reference_gap"] < 1e-6 and o.metrics["measurements_suffice"]
        assert o.metrics["control_error"] > 10 * o.metrics["smallest_alpha_error"]


def _metrics(**overrides):
    base = dict(measurements_suffice=True, monotone_in_alpha=True, smallest_alpha_error=0.01,
                smallest_alpha_residual=1e-5, smallest_alpha_recovery=0.01, control_error=0.8,
                control_residual=1e-12,
                nuclear_ratio_smallest_alpha=1.0)
    return Result(SMOKE, 0, "ok", {**base, **overrides}, {})


@pytest.mark.parametrize("bad, check", [
    (dict(monotone_in_alpha=False), "error non-increasing as α → 0"),
    (dict(smallest_alpha_error=0.06), "smallest α reaches min nuclear norm"),
    (dict(smallest_alpha_residual=2e-3), "GD fits the measurements"),
    (dict(smallest_alpha_recovery=0.2), "recovers M*"),
    (dict(control_error=0.2), "control α = 1 ends far"),
])
def test_verdict_fails_when_any_seed_breaks_the_criterion(bad, check):
    verdict = CLAIM.judge(Results([_metrics(), _metrics(**bad)]))
    assert verdict.passed is False
    assert verdict.details["checks"][check] is False
    assert check in verdict.measured
    assert CLAIM.judge(Results([_metrics()])).passed


def test_configs_where_min_nuclear_norm_is_not_the_truth_are_reported_not_judged():
    conjecture = _metrics(measurements_suffice=False, monotone_in_alpha=False)
    verdict = CLAIM.judge(Results([_metrics(), conjecture]))
    assert verdict.passed and "reported" in verdict.measured
    assert CLAIM.judge(Results([conjecture])).passed is False


@pytest.mark.parametrize("bad", [
    dict(problem="cubic"), dict(rank=0), dict(steps=10), dict(alphas=[0.1, 0.01, 0.001]),
    dict(alphas=[1.0, 0.01, 0.1]), dict(lr_scale=3.0),
])
def test_bad_configs_raise_a_user_error(bad):
    with pytest.raises(UserError):
        CLAIM.validate({**SMOKE, **bad})


def test_closed_form_sharpness_is_the_dense_hessians_largest_eigenvalue():
    from dltheory.claims.implicit_bias_matrix_factorization import _sharpness

    g = torch.Generator().manual_seed(0)
    for n, k, m in ((5, 5, 12), (6, 3, 20)):
        S = torch.randn(m, n, n, generator=g, dtype=torch.float64)  # not symmetric
        y = torch.randn(m, generator=g, dtype=torch.float64)
        U = torch.randn(n, k, generator=g, dtype=torch.float64)

        def f(u, S=S, y=y, n=n, k=k):
            V = u.reshape(n, k)
            return 0.5 * ((torch.einsum("mij,ij->m", S, V @ V.mT) - y) ** 2).mean()

        dense = float(torch.linalg.eigvalsh(torch.func.hessian(f)(U.reshape(-1))).max())
        assert _sharpness(S, y, U) == pytest.approx(dense, rel=1e-12)
