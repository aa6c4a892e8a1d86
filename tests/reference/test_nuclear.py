import numpy as np
import pytest

from dltheory.errors import ConfigError, ShapeError, SolverError
from dltheory.reference import min_nuclear_norm, min_nuclear_norm_completion


def test_one_measurement_gives_y_over_the_top_singular_value():
    # min ‖M‖_* s.t. ⟨A, M⟩ = y is y·u vᵀ/σ_max(A), u, v A's top singular pair
    rng = np.random.default_rng(0)
    A = rng.standard_normal((3, 4))
    U, s, Vt = np.linalg.svd(A)
    sol = min_nuclear_norm(A[None], np.array([2.0]))
    np.testing.assert_allclose(sol.M, 2.0 / s[0] * np.outer(U[:, 0], Vt[0]), atol=1e-7)
    assert sol.nuclear_norm == pytest.approx(2.0 / s[0], rel=1e-8)


def test_psd_one_measurement_puts_the_mass_on_the_top_eigenvector():
    A = np.diag([3.0, 1.0, -2.0])
    sol = min_nuclear_norm(A[None], np.array([6.0]), psd=True)
    np.testing.assert_allclose(sol.M, np.diag([2.0, 0.0, 0.0]), atol=1e-7)


def test_enough_gaussian_measurements_recover_a_low_rank_psd_matrix():
    rng = np.random.default_rng(1)
    n, r = 8, 1
    U = rng.standard_normal((n, r))
    M = U @ U.T
    A = rng.standard_normal((40, n, n))
    for psd in (True, False):
        sol = min_nuclear_norm(A, np.einsum("mij,ij->m", A, M), psd=psd)
        assert np.linalg.norm(sol.M - M) / np.linalg.norm(M) < 1e-6
        assert abs(sol.gap) < 1e-6 and sol.residual < 1e-6


def test_completion_fills_a_hidden_diagonal_of_a_rank_one_matrix():
    v = np.array([1.0, 2.0, -1.0, 0.5])
    M = np.outer(v, v)
    mask = 1 - np.eye(4)
    sol = min_nuclear_norm_completion(M, mask, psd=True)
    np.testing.assert_allclose(sol.M, M, atol=1e-6)
    # the dual certificate is supported on the observed entries only
    np.testing.assert_allclose(np.diag(sol.dual), 0.0, atol=1e-12)


def test_infeasible_and_bad_inputs_are_clear_errors():
    # ⟨I, M⟩ = −1 with M PSD is impossible
    with pytest.raises(SolverError, match="no matrix meets"):
        min_nuclear_norm(np.eye(2)[None], np.array([-1.0]), psd=True)
    with pytest.raises(ShapeError, match="needs A"):
        min_nuclear_norm(np.eye(2), np.array([1.0]))
    with pytest.raises(ShapeError, match="square"):
        min_nuclear_norm(np.ones((1, 2, 3)), np.array([1.0]), psd=True)
    with pytest.raises(ShapeError, match="observes no entry"):
        min_nuclear_norm_completion(np.eye(2), np.zeros((2, 2)))


def test_principal_component_pursuit_separates_an_incoherent_rank_one_matrix_from_outliers():
    from dltheory.reference import principal_component_pursuit

    rng = np.random.default_rng(0)
    n = 12
    low = np.outer(rng.choice([-1.0, 1.0], n), rng.choice([-1.0, 1.0], n)) / n  # μ = 1
    outliers = np.where(rng.random((n, n)) < 0.05, 2.0 / n * rng.choice([-1.0, 1.0], (n, n)), 0.0)
    sol = principal_component_pursuit(low + outliers, 1 / np.sqrt(n))
    assert np.abs(sol.X - low).max() <= 1e-6 and np.abs(sol.S - outliers).max() <= 1e-6
    # the certificate: ‖Y‖_op ≤ 1, max|Y| ≤ λ, ⟨Y, M⟩ = objective
    assert np.linalg.norm(sol.dual, 2) <= 1 + 1e-6 and np.abs(sol.dual).max() <= 1 / np.sqrt(n) + 1e-6
    assert abs(sol.gap) <= 1e-6


def test_principal_component_pursuit_bad_input_is_a_clear_error():
    from dltheory.errors import ConfigError
    from dltheory.reference import principal_component_pursuit

    with pytest.raises(ShapeError, match="2-d"):
        principal_component_pursuit(np.ones(3), 0.5)
    with pytest.raises(ConfigError, match="weight"):
        principal_component_pursuit(np.ones((3, 3)), 0.0)
    with pytest.raises(ShapeError, match="NaN"):
        principal_component_pursuit(np.full((2, 2), np.nan), 0.5)


def _sensing(seed, n=6, m=18):
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((n, 1))
    A = rng.standard_normal((m, n, n))
    A = A + A.transpose(0, 2, 1)
    return A, np.einsum("mij,ij->m", A, U @ U.T)


@pytest.mark.parametrize("psd", [True, False])
def test_cached_sensing_problem_gives_the_same_bits_first_and_after_other_solves(psd):
    # built once per shape (DPP): a seed's reference must not depend on whether its solve
    # was the first of that shape or followed others (batched vs looped seeds)
    from dltheory.reference.nuclear import _sensing_program

    _sensing_program.cache_clear()
    first = min_nuclear_norm(*_sensing(0), psd=psd)
    min_nuclear_norm(*_sensing(1), psd=psd)
    again = min_nuclear_norm(*_sensing(0), psd=psd)
    assert np.array_equal(first.M, again.M) and first.gap == again.gap


def test_cached_and_fresh_sensing_problems_agree(monkeypatch):
    from dltheory.reference import nuclear

    cached = min_nuclear_norm(*_sensing(2), psd=True)
    monkeypatch.setattr(nuclear, "_CACHED_SIZE", 0)  # every problem built fresh
    fresh = min_nuclear_norm(*_sensing(2), psd=True)
    np.testing.assert_allclose(cached.M, fresh.M, atol=1e-8)
    assert cached.nuclear_norm == pytest.approx(fresh.nuclear_norm, rel=1e-9)


def _completion_instance(n, rank, m, seed, psd=False):
    g = np.random.default_rng(seed)
    U, V = g.standard_normal((n, rank)), g.standard_normal((n, rank))
    M = U @ U.T if psd else U @ V.T
    mask = np.zeros(n * n, bool)
    mask[g.choice(n * n, m, replace=False)] = True
    mask = mask.reshape(n, n)
    return n * M / np.linalg.norm(M), (mask | mask.T) if psd else mask


@pytest.mark.parametrize("psd", [False, True])
@pytest.mark.parametrize("m, seed", [(90, 0), (150, 1)])
def test_admm_completion_matches_the_interior_point(psd, m, seed):
    # 16 × 16, rank 2: m = 90 is short of recovery without PSD (M* not the minimizer), 150
    # nearly there; the ADMM answer is the interior point's either way
    M, mask = _completion_instance(16, 2, m, seed, psd)
    conic = min_nuclear_norm_completion(M, mask, psd=psd, method="conic")
    admm = min_nuclear_norm_completion(M, mask, psd=psd, method="admm")
    assert admm.nuclear_norm == pytest.approx(conic.nuclear_norm, rel=1e-6)
    assert np.linalg.norm(admm.M - conic.M) / np.linalg.norm(conic.M) < 1e-4  # measured ≤ 9e-6


def test_admm_answer_meets_the_data_exactly_and_its_dual_bounds_the_optimum():
    M, mask = _completion_instance(16, 2, 110, 2)
    sol = min_nuclear_norm_completion(M, mask, method="admm")
    assert np.array_equal(sol.M[mask], M[mask]) and sol.residual == 0.0
    assert np.linalg.norm(sol.dual, 2) <= 1.0 + 1e-12  # scaled into the dual's feasible set
    assert np.all(sol.dual[~mask] == 0.0)
    # weak duality: ⟨dual, M⟩ ≤ min ‖·‖_* ≤ ‖sol.M‖_*, within the stopping gap (0.5 · tol)
    lower = float((sol.dual * M).sum())
    assert 0.0 <= sol.nuclear_norm - lower <= 5e-7 * sol.nuclear_norm
    assert sol.gap == pytest.approx((sol.nuclear_norm - lower) / sol.nuclear_norm, abs=1e-12)


def test_auto_completion_hands_large_problems_to_admm(monkeypatch):
    import dltheory.reference.nuclear as nuclear

    M, mask = _completion_instance(24, 2, 250, 0)  # 576 entries > _CONIC_ENTRIES
    auto = min_nuclear_norm_completion(M, mask)
    assert np.array_equal(auto.M, min_nuclear_norm_completion(M, mask, method="admm").M)
    monkeypatch.setattr(nuclear, "_CONIC_ENTRIES", 24 * 24)
    assert np.array_equal(min_nuclear_norm_completion(M, mask).M,
                          min_nuclear_norm_completion(M, mask, method="conic").M)


def test_admm_that_does_not_converge_and_a_bad_method_are_clear_errors(monkeypatch):
    import dltheory.reference.nuclear as nuclear

    M, mask = _completion_instance(16, 2, 110, 0)
    monkeypatch.setattr(nuclear, "_ADMM_ITERATIONS", 20)
    with pytest.raises(SolverError, match="ADMM did not reach the duality gap 5e-07 in 20 iter"):
        min_nuclear_norm_completion(M, mask, method="admm")
    with pytest.raises(ConfigError, match="method must be auto, conic or admm"):
        min_nuclear_norm_completion(M, mask, method="scs")
