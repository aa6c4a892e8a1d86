import numpy as np
import pytest
import torch

from dltheory import ConfigError
from dltheory.claims import Result, Results, get_claim
from dltheory.claims.quadratic_overparam_global_min import _convex_optimum, _objective

CLAIM = get_claim("quadratic-overparam-global-min")
SMOKE = CLAIM.sweep("smoke").configs
SHORT = {**SMOKE[-1], "steps": 200}


def test_batched_seeds_equal_each_seed_run_alone_bit_for_bit():
    together = CLAIM.run_batch(SHORT, [0, 1, 2], "cpu")
    for seed, batched in zip([0, 1, 2], together):
        alone = CLAIM.run_batch(SHORT, [seed], "cpu")[0]
        assert batched.metrics == alone.metrics, seed
    assert together[0].metrics != together[1].metrics


def test_every_width_of_a_seed_sees_the_same_teacher_and_data():
    (a, xa), (b, xb) = CLAIM._problem({**SHORT, "m": 1}, 3, "cpu"), CLAIM._problem(SHORT, 3, "cpu")
    assert a.X.equal(b.X) and a.y.equal(b.y) and xa.equal(xb)


def test_convex_optimum_satisfies_its_optimality_condition():
    # KKT of min_{M ⪰ 0} f(M) + (λ/2) tr M: G = ∇f + λ/2·I ⪰ 0 and ⟨G, M⟩ = 0.
    problem, _ = CLAIM._problem(SMOKE[0], 0, "cpu")
    lam = SMOKE[0]["lam"]
    M_star, value = _convex_optimum(problem.X, problem.y, lam)
    M = torch.as_tensor(M_star)
    X, y = problem.X, problem.y
    r = ((X @ M) * X).sum(-1) - y
    G = (X.T * r) @ X / len(y) + lam / 2 * torch.eye(X.shape[1], dtype=X.dtype)
    assert torch.linalg.eigvalsh(G).min() > -1e-6
    assert abs(float((G * M).sum())) < 1e-6 * value
    assert torch.linalg.eigvalsh(M).min() > -1e-8
    assert value == pytest.approx(_objective(M, X, y, lam))


def test_smoke_wide_students_reach_the_convex_optimum_and_the_control_does_not():
    sweep = CLAIM.sweep("smoke")
    results = Results(Result(c, s, "ok", o.metrics, o.curves) for c in sweep.configs
                      for s, o in zip(sweep.seeds, CLAIM.run_batch(c, list(sweep.seeds), "cpu")))
    verdict = CLAIM.judge(results)
    assert verdict.passed is True, verdict.measured
    assert CLAIM.figure(results) is not None


def _results(rows):
    """rows: (m, gap, test error, convex test error)."""
    return Results(Result({"m": m}, s, "ok", {"gap": gap, "test_error": t, "test_error_convex": tc,
                                              "sqrt_2N": 7.0, "rank_convex": 3}, {})
                   for s, (m, gap, t, tc) in enumerate(rows))


GOOD = [(1, 2.0, 0.5, 0.1), (3, 1e-3, 0.11, 0.1), (7, 1e-6, 0.1, 0.1), (12, 1e-6, 0.101, 0.1)]


def test_judge_passes_when_wide_nets_reach_the_optimum():
    assert CLAIM.judge(_results(GOOD)).passed is True


@pytest.mark.parametrize("bad, check", [
    ([*GOOD[:3], (12, 1e-3, 0.1, 0.1)], "m >= √(2N) reaches the convex optimum"),
    ([*GOOD[:3], (12, 1e-6, 0.2, 0.1)], "test error flat in m"),
    ([(1, 1e-3, 0.1, 0.1), *GOOD[1:]], "rank-deficient control stays above"),
])
def test_judge_fails_when_the_numbers_break_the_criterion(bad, check):
    verdict = CLAIM.judge(_results(bad))
    assert verdict.passed is False
    assert verdict.details["checks"][check] is False and check in verdict.measured


@pytest.mark.parametrize("key, value", [("d", 0), ("N", 0), ("m", 0), ("lam", 0.0), ("lr", 0.6),
                                         ("steps", 0)])
def test_bad_configs_are_refused(key, value):
    with pytest.raises(ConfigError):
        CLAIM.validate({**SHORT, key: value})


def test_convex_program_gives_the_same_bits_first_and_after_other_solves():
    # each solve builds its own solver: a seed's optimum must not depend on the solves before
    (p0, _), (p1, _) = (CLAIM._problem(SMOKE[0], s, "cpu") for s in (0, 1))
    first = _convex_optimum(p0.X, p0.y, SMOKE[0]["lam"])
    _convex_optimum(p1.X, p1.y, SMOKE[0]["lam"])
    again = _convex_optimum(p0.X, p0.y, SMOKE[0]["lam"])
    assert np.array_equal(first[0], again[0]) and first[1] == again[1]


@pytest.mark.parametrize("seed", [0, 1])
def test_hand_built_program_matches_the_program_posed_in_cvxpy(seed):
    import cvxpy as cp

    problem, _ = CLAIM._problem(SMOKE[0], seed, "cpu")
    X, y, lam = problem.X.double().numpy(), problem.y.double().numpy(), SMOKE[0]["lam"]
    N, d = X.shape
    M = cp.Variable((d, d), PSD=True)
    reference = cp.Problem(cp.Minimize(cp.sum_squares(cp.sum(cp.multiply(X @ M, X), axis=1) - y) / (2 * N)
                                       + lam / 2 * cp.trace(M)))
    reference.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    M_star, value = _convex_optimum(problem.X, problem.y, lam)
    assert value == pytest.approx(reference.value, rel=1e-8)
    np.testing.assert_allclose(M_star, M.value, atol=1e-5)
