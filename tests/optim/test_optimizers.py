"""Each optimizer against a closed form on a problem where the answer is known."""

import doctest
import importlib
import math

import pytest
import torch

from dltheory.optim import (
    ADMM,
    GD,
    SAM,
    CoordinateDescent,
    LabelNoise,
    MirrorDescent,
    NoisyGD,
    PerturbedGD,
    RiemannianGD,
    SteepestDescent,
    jin2017_parameters,
    make_manifold,
    make_potential,
    minimize,
)
from dltheory.problems import StrictSaddle

DTYPE = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _quadratic(seed=0, d=5):
    """f(w) = ½ wᵀAw − bᵀw with A positive definite."""
    g = _gen(seed)
    B = torch.randn(d, d, generator=g, dtype=DTYPE)
    A = B @ B.T / d + torch.eye(d, dtype=DTYPE)
    b = torch.randn(d, generator=g, dtype=DTYPE)
    return A, b, lambda w: 0.5 * w @ A @ w - b @ w


def _one_step(optimizer, loss, w0, **options):
    return minimize(loss, w0, optimizer, steps=1, **options).params


def test_gd_iterates_match_closed_form_on_quadratic():
    A, b, loss = _quadratic()
    w0, lr = torch.zeros(5, dtype=DTYPE), 0.1
    expected = w0.clone()
    for _ in range(20):
        expected = expected - lr * (A @ expected - b)
    assert torch.allclose(minimize(loss, w0, GD, steps=20, lr=lr).params, expected, atol=1e-14)


def test_steepest_l2_step_equals_gd_step():
    _, _, loss = _quadratic()
    w0 = torch.randn(5, generator=_gen(1), dtype=DTYPE)
    assert torch.allclose(_one_step(SteepestDescent, loss, w0, lr=0.1, norm="l2"),
                          _one_step(GD, loss, w0, lr=0.1), atol=1e-15)


def test_steepest_l1_step_equals_greedy_coordinate_step_scaled_by_linf_norm():
    A, b, loss = _quadratic()
    w0 = torch.randn(5, generator=_gen(1), dtype=DTYPE)
    g = A @ w0 - b
    i = int(g.abs().argmax())
    expected = w0.clone()
    expected[i] -= 0.1 * g.abs().max() * torch.sign(g[i])
    steepest = _one_step(SteepestDescent, loss, w0, lr=0.1, norm="l1")
    assert torch.allclose(steepest, expected, atol=1e-15)
    greedy = _one_step(CoordinateDescent, loss, w0, lr=0.1, order="greedy")
    assert torch.allclose(steepest, greedy, atol=1e-15)


def test_steepest_linf_step_is_sign_scaled_by_l1_norm():
    A, b, loss = _quadratic()
    w0 = torch.randn(5, generator=_gen(1), dtype=DTYPE)
    g = A @ w0 - b
    expected = w0 - 0.1 * g.abs().sum() * torch.sign(g)
    assert torch.allclose(_one_step(SteepestDescent, loss, w0, lr=0.1, norm="linf"), expected, atol=1e-14)


@pytest.mark.parametrize("p", [1.5, 3.0])
def test_steepest_lp_step_has_dual_norm_length_and_maximizes_inner_product(p):
    A, b, loss = _quadratic()
    w0 = torch.randn(5, generator=_gen(1), dtype=DTYPE)
    g = A @ w0 - b
    step = (w0 - _one_step(SteepestDescent, loss, w0, lr=1.0, norm=p))
    q = p / (p - 1)
    dual = torch.linalg.vector_norm(g, ord=q)
    # Δ = ‖g‖_* u with ‖u‖_p = 1 and ⟨u, g⟩ = ‖g‖_* (Hölder equality)
    assert torch.isclose(torch.linalg.vector_norm(step, ord=p), dual)
    assert torch.isclose(step @ g, dual ** 2)


def test_steepest_descent_treats_all_parameters_as_one_vector():
    a = torch.tensor([1.0, -2.0], dtype=DTYPE, requires_grad=True)
    b = torch.tensor([[3.0]], dtype=DTYPE, requires_grad=True)
    opt = SteepestDescent([a, b], lr=0.5, norm="l1")
    (0.5 * (a ** 2).sum() + 0.5 * (b ** 2).sum()).backward()
    opt.step()
    assert a.tolist() == [1.0, -2.0]  # only the largest partial in either tensor moves
    assert b.item() == pytest.approx(1.5)


def test_cyclic_coordinate_descent_zeroes_one_coordinate_per_step():
    w0 = torch.randn(4, generator=_gen(2), dtype=DTYPE)
    for k in range(5):
        w = minimize(lambda w: 0.5 * (w ** 2).sum(), w0, CoordinateDescent, steps=k, lr=1.0).params
        assert torch.equal(w[:k], torch.zeros(min(k, 4), dtype=DTYPE))
        assert torch.equal(w[k:], w0[k:])


def test_random_coordinate_descent_is_reproducible_and_converges():
    A, b, loss = _quadratic()
    runs = [minimize(loss, torch.zeros(5, dtype=DTYPE), CoordinateDescent, steps=400, lr=0.3, order="random",
                     generator=_gen(3)).params for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    assert torch.allclose(runs[0], torch.linalg.solve(A, b), atol=1e-6)


def test_mirror_descent_entropy_on_simplex_is_softmax_of_accumulated_linear_cost():
    c = torch.tensor([0.3, -1.0, 2.0, 0.5], dtype=DTYPE)
    w0 = torch.full((4,), 0.25, dtype=DTYPE)
    lr, steps = 0.2, 30
    w = minimize(lambda w: c @ w, w0, MirrorDescent, steps=steps, lr=lr, potential="entropy",
                 simplex=True).params
    assert torch.allclose(w, torch.softmax(-lr * steps * c, 0), atol=1e-14)


def test_mirror_descent_l2_is_gd_and_hypentropy_follows_its_mirror_map():
    _, _, loss = _quadratic()
    w0 = torch.randn(5, generator=_gen(4), dtype=DTYPE)
    assert torch.allclose(_one_step(MirrorDescent, loss, w0, lr=0.1, potential="l2"),
                          _one_step(GD, loss, w0, lr=0.1), atol=1e-15)
    A, b, _ = _quadratic()
    beta = 0.5
    expected = beta * torch.sinh(torch.asinh(w0 / beta) - 0.1 * (A @ w0 - b))
    step = _one_step(MirrorDescent, loss, w0, lr=0.1, potential="hypentropy", beta=beta)
    assert torch.allclose(step, expected)


@pytest.mark.parametrize("name,options", [("entropy", {}), ("l2", {}), ("lp", {"p": 3.0}),
                                          ("hypentropy", {"beta": 0.3})])
def test_potential_mirror_maps_invert_and_bregman_is_nonnegative(name, options):
    psi = make_potential(name, **options)
    w = torch.rand(6, generator=_gen(5), dtype=DTYPE) + 0.1
    v = torch.rand(6, generator=_gen(6), dtype=DTYPE) + 0.1
    assert torch.allclose(psi.inverse_mirror_map(psi.mirror_map(w)), w, atol=1e-12)
    assert psi.bregman(w, v) > 0 and psi.bregman(w, w).abs() < 1e-12


def test_entropy_bregman_is_kl_and_l2_simplex_projection_is_euclidean():
    w, v = torch.tensor([0.2, 0.3, 0.5], dtype=DTYPE), torch.tensor([0.4, 0.4, 0.2], dtype=DTYPE)
    assert torch.isclose(make_potential("entropy").bregman(w, v), (w * torch.log(w / v)).sum())
    project = make_potential("l2").project_simplex
    assert torch.allclose(project(torch.tensor([0.5, 0.5, 0.5], dtype=DTYPE)),
                          torch.full((3,), 1 / 3, dtype=DTYPE))
    assert torch.allclose(project(torch.tensor([2.0, 0.0, -1.0], dtype=DTYPE)),
                          torch.tensor([1.0, 0.0, 0.0], dtype=DTYPE))


def test_mirror_descent_lp_converges_to_minimizer():
    A, b, loss = _quadratic()
    w = minimize(loss, torch.full((5,), 0.1, dtype=DTYPE), MirrorDescent, steps=2000, lr=0.05,
                 potential="lp", p=3.0).params
    assert torch.allclose(w, torch.linalg.solve(A, b), atol=1e-6)


def test_riemannian_gd_on_sphere_finds_bottom_eigenvector_and_stays_on_sphere():
    A, _, _ = _quadratic(d=6)
    sphere = make_manifold("sphere")
    x = sphere.random(6, generator=_gen(7)).requires_grad_()
    opt = RiemannianGD([x], lr=0.2, manifold="sphere")
    for _ in range(600):
        opt.zero_grad()
        (x @ A @ x).backward()
        opt.step()
        assert sphere.residual(x.detach()) < 1e-13
    eigenvalues = torch.linalg.eigvalsh(A)
    assert float(x.detach() @ A @ x.detach()) == pytest.approx(float(eigenvalues[0]), abs=1e-8)


def test_riemannian_gd_on_stiefel_minimizes_trace_and_stays_on_manifold():
    A, _, _ = _quadratic(d=6)
    stiefel = make_manifold("stiefel")
    X = stiefel.random((6, 2), generator=_gen(8)).requires_grad_()
    opt = RiemannianGD([X], lr=0.2, manifold=stiefel)
    for _ in range(600):
        opt.zero_grad()
        torch.trace(X.T @ A @ X).backward()
        opt.step()
        assert stiefel.residual(X.detach()) < 1e-12
    value = float(torch.trace(X.detach().T @ A @ X.detach()))
    assert value == pytest.approx(float(torch.linalg.eigvalsh(A)[:2].sum()), abs=1e-8)


def test_oblique_retraction_keeps_unit_rows():
    oblique = make_manifold("oblique")
    X = oblique.random((5, 3), generator=_gen(9))
    V = oblique.tangent(X, torch.randn(5, 3, generator=_gen(10), dtype=DTYPE))
    assert torch.allclose((X * V).sum(1), torch.zeros(5, dtype=DTYPE), atol=1e-14)
    assert oblique.residual(oblique.retract(X, V)) < 1e-14


def test_gd_started_exactly_at_strict_saddle_stays_there():
    saddle = StrictSaddle()
    result = minimize(saddle.loss, saddle.saddle, GD, steps=500, lr=0.1)
    assert torch.equal(result.params, saddle.saddle)


def test_perturbed_gd_escapes_strict_saddle_and_stops_at_a_minimizer():
    saddle = StrictSaddle()
    w = saddle.saddle.clone().requires_grad_()
    opt = PerturbedGD.from_jin2017([w], ell=4.0, rho=7.0, epsilon=1e-2, delta_f=1.0, generator=_gen(11))

    def closure():
        opt.zero_grad()
        value = saddle.loss(w)
        value.backward()
        return value

    for _ in range(3000):
        opt.step(closure)
        if opt.converged:
            break
    assert opt.converged
    assert saddle.recovery_error(w) < 1e-2
    assert float(saddle.loss(w.detach())) == pytest.approx(saddle.global_min_value, abs=1e-4)


def test_jin2017_parameters_use_chi_floor_of_twelve():
    # log(d ℓ Δf / (c ε² δ)) = log(1 · 1 · 1e-4 / (1e-2 · 0.5)) < 4, so χ = 12
    params = jin2017_parameters(1, ell=1.0, rho=1.0, epsilon=0.1, delta_f=1e-4, delta=0.5)
    assert params["lr"] == 1.0
    assert params["radius"] == pytest.approx(0.1 / 144)
    assert params["f_thres"] == pytest.approx(math.sqrt(1e-3) / 12 ** 3)
    assert params["t_thres"] == math.ceil(12 / math.sqrt(0.1))


def test_admm_consensus_of_quadratics_is_their_mean():
    targets = torch.randn(3, 4, generator=_gen(12), dtype=DTYPE)
    losses = [lambda x, a=a: 0.5 * ((x - a) ** 2).sum() for a in targets]
    z = torch.zeros(4, dtype=DTYPE, requires_grad=True)
    opt = ADMM([z], losses, lr=0.5, rho=1.0, inner_steps=5)
    for _ in range(200):
        opt.step()
    assert torch.allclose(z.detach(), targets.mean(0), atol=1e-8)


def test_admm_splitting_with_l1_prox_solves_the_lasso_in_closed_form():
    a = torch.tensor([2.0, -0.3, 0.7, -1.5], dtype=DTYPE)
    lam = 0.5

    def soft_threshold(v, t):
        return torch.sign(v) * torch.clamp(v.abs() - lam * t, min=0)

    z = torch.zeros(4, dtype=DTYPE, requires_grad=True)
    opt = ADMM([z], [lambda x: 0.5 * ((x - a) ** 2).sum()], lr=0.5, rho=1.0, inner_steps=10,
               prox=soft_threshold)
    for _ in range(200):
        opt.step()
    assert torch.allclose(z.detach(), soft_threshold(a, 1.0), atol=1e-8)


def test_noisy_gd_matches_stationary_variance_of_discretized_langevin():
    lr, beta = 0.1, 4.0
    w = torch.zeros(20000, dtype=DTYPE)
    result = minimize(lambda w: 0.5 * (w ** 2).sum(), w, NoisyGD, steps=200, lr=lr, beta=beta,
                      generator=_gen(13))
    # w₊ = (1 − η)w + √(2η/β)ξ has stationary variance (2η/β)/(1 − (1 − η)²)
    expected = (2 * lr / beta) / (1 - (1 - lr) ** 2)
    assert float(result.params.var()) == pytest.approx(expected, rel=0.03)
    again = minimize(lambda w: 0.5 * (w ** 2).sum(), w, NoisyGD, steps=200, lr=lr, beta=beta,
                     generator=_gen(13))
    assert torch.equal(result.params, again.params)


def test_sam_step_matches_closed_form_on_quadratic():
    A, b, loss = _quadratic()
    w0 = torch.randn(5, generator=_gen(14), dtype=DTYPE)
    g = A @ w0 - b
    eps = 0.05 * g / g.norm()
    expected = w0 - 0.1 * (A @ (w0 + eps) - b)
    assert torch.allclose(_one_step(SAM, loss, w0, lr=0.1, rho=0.05), expected, atol=1e-15)


def test_batched_sam_steps_each_slice_as_its_own_sam():
    # three points of one quadratic stacked along the first axis, each its own problem
    _, _, loss = _quadratic()
    W0 = torch.randn(3, 5, generator=_gen(17), dtype=DTYPE)
    stacked = W0.clone().requires_grad_()
    opt = SAM([stacked], lr=0.1, rho=0.05, batched=True)

    def closure():
        opt.zero_grad()
        value = sum(loss(w) for w in stacked)
        value.backward()
        return value

    opt.step(closure)
    for w0, w1 in zip(W0, stacked.detach()):
        assert torch.allclose(w1, _one_step(SAM, loss, w0, lr=0.1, rho=0.05), atol=1e-15)


def test_label_noise_gradient_is_clean_gradient_plus_linear_noise_term():
    g = _gen(15)
    X = torch.randn(8, 3, generator=g, dtype=DTYPE)
    y = torch.randn(8, generator=g, dtype=DTYPE)
    noisy = LabelNoise(lambda w, t: 0.5 * ((X @ w - t) ** 2).mean(), y, sigma=0.7, generator=_gen(16))
    w = torch.randn(3, generator=g, dtype=DTYPE, requires_grad=True)
    (grad_noisy,) = torch.autograd.grad(noisy(w), w)
    (grad_clean,) = torch.autograd.grad(noisy.clean(w), w)
    assert torch.allclose(grad_noisy, grad_clean - 0.7 * X.T @ noisy.last_noise / 8, atol=1e-14)
    first = noisy.last_noise
    noisy(w)
    assert not torch.equal(first, noisy.last_noise)


def _w():
    return [torch.zeros(2, requires_grad=True)]


@pytest.mark.parametrize("make,bad", [
    (lambda: GD(_w(), lr=-1.0), "-1.0"),
    (lambda: GD(_w(), lr=float("nan")), "nan"),
    (lambda: NoisyGD(_w(), lr=0.1, beta=0.0, generator=_gen()), "0.0"),
    (lambda: NoisyGD(_w(), lr=0.1, beta=1.0, generator=None), "None"),
    (lambda: SAM(_w(), lr=0.1, rho=-0.1), "-0.1"),
    (lambda: SAM([torch.zeros(2, 3), torch.zeros(3)], lr=0.1, batched=True), "(2, 3), (3,)"),
    (lambda: SteepestDescent(_w(), lr=0.1, norm="l3"), "l3"),
    (lambda: SteepestDescent(_w(), lr=0.1, norm=0.5), "0.5"),
    (lambda: SteepestDescent([{"params": _w()}, {"params": _w()}], lr=0.1), "single parameter group"),
    (lambda: CoordinateDescent(_w(), lr=0.1, order="zigzag"), "zigzag"),
    (lambda: CoordinateDescent(_w(), lr=0.1, order="random"), "None"),
    (lambda: MirrorDescent(_w(), lr=0.1, potential="tsallis"), "tsallis"),
    (lambda: MirrorDescent(_w(), lr=0.1, potential="lp"), "p: None"),
    (lambda: MirrorDescent(_w(), lr=0.1, potential="l2", p=3.0), "p=3.0"),
    (lambda: MirrorDescent(_w(), lr=0.1, potential="entropy"), "entry > 0"),
    (lambda: MirrorDescent([torch.ones(2)], lr=0.1, potential="lp", p=3.0, simplex=True), "simplex"),
    (lambda: MirrorDescent([torch.ones(2)], lr=0.1, potential="entropy", simplex=True), "sum 2.0"),
    (lambda: PerturbedGD(_w(), lr=0.1, radius=0.1, g_thres=0.1, f_thres=0.1, t_thres=0, generator=_gen()),
     "t_thres: 0"),
    (lambda: jin2017_parameters(2, ell=1.0, rho=1.0, epsilon=0.1, delta_f=1.0, delta=1.5), "1.5"),
    (lambda: RiemannianGD(_w(), lr=0.1, manifold="torus"), "torus"),
    (lambda: RiemannianGD([torch.ones(3)], lr=0.1, manifold="sphere"), "not on the sphere"),
    (lambda: ADMM(_w(), [], lr=0.1), "local_losses"),
    (lambda: ADMM(_w(), [lambda x: x.sum()], lr=0.1, rho=0.0), "rho: 0.0"),
    (lambda: minimize(lambda w: w.sum(), torch.zeros(2), GD, steps=-1, lr=0.1), "steps: -1"),
])
def test_invalid_arguments_raise_value_error_naming_the_value(make, bad):
    with pytest.raises(ValueError, match="Invalid") as info:
        make()
    assert bad in str(info.value)


@pytest.mark.parametrize("optimizer,options", [
    (SAM, {"lr": 0.1}),
    (PerturbedGD, {"lr": 0.1, "radius": 0.1, "g_thres": 0.1, "f_thres": 0.1, "t_thres": 5,
                   "generator": _gen()}),
])
def test_optimizers_that_need_a_closure_say_so(optimizer, options):
    with pytest.raises(ValueError, match="closure"):
        optimizer(_w(), **options).step()


def test_minimize_reports_divergence_instead_of_raising():
    result = minimize(lambda w: (w ** 2).sum(), torch.ones(1), GD, steps=500, lr=10.0)
    assert result.diverged and len(result.losses) < 500


@pytest.mark.parametrize("module", ["dltheory.optim.gd", "dltheory.optim.driver"])
def test_docstring_examples_run(module):
    assert doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS).failed == 0


def test_noisy_gd_with_one_generator_per_row_steps_each_row_as_its_own_run():
    # parameters stacked over 3 seeds, row s drawing from generator s, give each seed the
    # bits it gets alone with one optimizer and its own generator
    a0 = torch.randn(3, 7, generator=_gen(20), dtype=DTYPE)
    W0 = torch.randn(3, 7, 2, generator=_gen(21), dtype=DTYPE)

    def loss(a, W):
        return (a.sin() * W.pow(2).sum(-1)).sum()

    a, W = a0.clone().requires_grad_(), W0.clone().requires_grad_()
    opt = NoisyGD([a, W], lr=0.1, beta=3.0, generator=[_gen(30 + s) for s in range(3)])
    for _ in range(5):
        opt.zero_grad()
        loss(a, W).backward()
        opt.step()
    for s in range(3):
        a_s, W_s = a0[s].clone().requires_grad_(), W0[s].clone().requires_grad_()
        alone = NoisyGD([a_s, W_s], lr=0.1, beta=3.0, generator=_gen(30 + s))
        for _ in range(5):
            alone.zero_grad()
            loss(a_s, W_s).backward()
            alone.step()
        assert torch.equal(a[s], a_s) and torch.equal(W[s], W_s), s
    with pytest.raises(ValueError, match="3 generators need every parameter stacked over 3 rows"):
        NoisyGD([torch.zeros(2, 5, requires_grad=True)], lr=0.1, beta=1.0,
                generator=[_gen(s) for s in range(3)])
    with pytest.raises(ValueError, match="Invalid generator"):
        NoisyGD([a], lr=0.1, beta=1.0, generator=[_gen(0), 7, _gen(1)])


def _noisy_run(a0, W0, generator, steps=11, **kw):
    """``steps`` NoisyGD steps on stacked (or single) parameters; returns them."""
    a, W = a0.clone().requires_grad_(), W0.clone().requires_grad_()
    opt = NoisyGD([a, W], lr=0.1, beta=3.0, generator=generator, **kw)
    for _ in range(steps):
        opt.zero_grad()
        (a.sin() * W.pow(2).sum(-1)).sum().backward()
        opt.step()
    return a.detach(), W.detach()


@pytest.mark.parametrize("m", [16, 32])
def test_noisy_gd_drawing_ahead_is_per_step_drawing_bit_for_bit_on_whole_blocks(m):
    # rows of 16k elements: one randn of K steps equals K per-step draws (11 steps cross
    # chunk boundaries of 4), for stacked rows and for a single generator
    a0 = torch.randn(3, m, generator=_gen(1), dtype=DTYPE)
    W0 = torch.randn(3, m, 2, generator=_gen(2), dtype=DTYPE)
    per_step = _noisy_run(a0, W0, [_gen(40 + s) for s in range(3)])
    ahead = _noisy_run(a0, W0, [_gen(40 + s) for s in range(3)], draw_ahead=4)
    assert all(torch.equal(x, y) for x, y in zip(per_step, ahead))
    one = _noisy_run(a0[0], W0[0], _gen(7)), _noisy_run(a0[0], W0[0], _gen(7), draw_ahead=4)
    assert all(torch.equal(x, y) for x, y in zip(*one))


def test_noisy_gd_drawing_ahead_on_ragged_rows_is_another_stream_still_batch_invariant():
    a0 = torch.randn(3, 7, generator=_gen(1), dtype=DTYPE)
    W0 = torch.randn(3, 7, 2, generator=_gen(2), dtype=DTYPE)
    ahead = _noisy_run(a0, W0, [_gen(40 + s) for s in range(3)], draw_ahead=4)
    assert not torch.equal(ahead[0], _noisy_run(a0, W0, [_gen(40 + s) for s in range(3)])[0])
    for s in range(3):
        alone = _noisy_run(a0[s:s + 1], W0[s:s + 1], [_gen(40 + s)], draw_ahead=4)
        assert torch.equal(ahead[0][s], alone[0][0]) and torch.equal(ahead[1][s], alone[1][0]), s


def test_noisy_gd_draw_ahead_rejects_what_it_cannot_do():
    a = torch.zeros(2, 16, dtype=DTYPE, requires_grad=True)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="Invalid draw_ahead"):
            NoisyGD([a], lr=0.1, beta=1.0, generator=_gen(), draw_ahead=bad)
    with pytest.raises(ValueError, match="one dtype and device"):
        NoisyGD([a, torch.zeros(2, 16, dtype=torch.float32, requires_grad=True)], lr=0.1,
                beta=1.0, generator=_gen(), draw_ahead=2)
    opt = NoisyGD([a], lr=0.1, beta=1.0, generator=_gen(), draw_ahead=2)
    late = torch.zeros(16, dtype=DTYPE, requires_grad=True)
    opt.add_param_group({"params": [late]})
    late.grad = torch.ones(16, dtype=DTYPE)
    a.grad = torch.ones(2, 16, dtype=DTYPE)
    with pytest.raises(ValueError, match="given at construction"):
        opt.step()
