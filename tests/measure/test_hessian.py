import math

import pytest
import torch
from torch import nn

from dltheory.errors import ShapeError, UserError
from dltheory.measure import (
    HessianOperator,
    batched_hvp,
    hessian_diagonal,
    hessian_eigs,
    hessian_trace,
    hvp,
    model_loss,
    spectral_density,
)
from dltheory.measure._pytree import _Layout

D = torch.float64


def _mlp_loss(criterion=None, batches=(13, 7), head=False):
    g = torch.Generator().manual_seed(0)
    layers = [nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.GELU(), nn.Linear(6, 4), nn.Sigmoid(),
              nn.Linear(4, 3)]
    model = nn.Sequential(*([nn.Flatten()] if head else []), *layers).to(D)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D))
    n = sum(batches)
    x = torch.randn(n, 5, generator=g, dtype=D)
    if criterion is None:
        criterion, y = nn.CrossEntropyLoss(), torch.randint(0, 3, (n,), generator=g)
    else:
        y = torch.randn(n, 3, generator=g, dtype=D)
    if head:
        x = x.reshape(n, 5, 1)
    splits = list(zip(x.split(list(batches)), y.split(list(batches))))
    return model_loss(model, criterion, splits)


def _dense(loss, params):
    layout = _Layout(params)
    theta = layout.flatten(params).detach()
    return torch.func.hessian(lambda t: loss(layout.unflatten(t)))(theta), layout


def _params(loss):
    return {n: p.detach().clone() for n, p in loss.params.items()}


def test_hvp_and_batched_hvp_equal_dense_hessian_products():
    loss = _mlp_loss()
    params = _params(loss)
    H, layout = _dense(loss, params)
    V = torch.randn(4, layout.numel, generator=torch.Generator().manual_seed(1), dtype=D)
    single = layout.flatten(hvp(loss, params, layout.unflatten(V[0])))
    batched = layout.flatten_batch(batched_hvp(loss, params, layout.build(layout.split(V)), chunk_size=3))
    op = HessianOperator(loss, params)
    torch.testing.assert_close(single, H @ V[0])
    torch.testing.assert_close(batched, V @ H)
    torch.testing.assert_close(op.matvec(V[1]), H @ V[1])


def test_measures_leave_params_grads_and_mode_untouched():
    loss = _mlp_loss()
    before = {n: p.detach().clone() for n, p in loss.params.items()}
    loss.model.train()
    hessian_trace(loss, loss.params, probes=5, method="hutchinson")
    hessian_eigs(loss, loss.params, k=1)
    assert loss.model.training
    for n, p in loss.model.named_parameters():
        assert p.grad is None and torch.equal(p.detach(), before[n])


@pytest.mark.parametrize("criterion", [None, nn.MSELoss()])
@pytest.mark.parametrize("head", [False, True])
def test_closed_form_diagonal_equals_dense_diagonal(criterion, head):
    loss = _mlp_loss(criterion, head=head)
    params = _params(loss)
    H, layout = _dense(loss, params)
    torch.testing.assert_close(layout.flatten(hessian_diagonal(loss, params)), H.diagonal(),
                               rtol=1e-10, atol=1e-13)
    est = hessian_trace(loss, params)
    assert est.method == "exact" and est.probes == 0
    assert float(est) == pytest.approx(float(H.trace()), rel=1e-10)


@pytest.mark.parametrize("layers, criterion, out_shape", [
    ([nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Conv2d(3, 2, 2, stride=2, padding=1), nn.Sigmoid(), nn.Flatten(),
      nn.Linear(18, 3)], nn.CrossEntropyLoss(), None),
    ([nn.Conv2d(2, 3, 3, padding=1, dilation=2, bias=False), nn.GELU(), nn.Flatten(), nn.Linear(75, 4),
      nn.Tanh(), nn.Linear(4, 3)], nn.CrossEntropyLoss(), None),
    ([nn.Conv2d(2, 1, 3), nn.Tanh(), nn.Conv2d(1, 1, 3)], nn.MSELoss(), (1, 3, 3)),
])
def test_closed_form_diagonal_of_convolutions_equals_dense_diagonal(layers, criterion, out_shape):
    g = torch.Generator().manual_seed(10)
    model = nn.Sequential(*layers).to(D)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=D))
    x = torch.randn(6, 2, 7, 7, generator=g, dtype=D)
    y = (torch.randint(0, 3, (6,), generator=g) if out_shape is None
         else torch.randn(6, *out_shape, generator=g, dtype=D))
    loss = model_loss(model, criterion, [(x[:4], y[:4]), (x[4:], y[4:])])
    params = _params(loss)
    H, layout = _dense(loss, params)
    torch.testing.assert_close(layout.flatten(hessian_diagonal(loss, params)), H.diagonal(),
                               rtol=1e-10, atol=1e-13)
    assert hessian_trace(loss, params).probes == 0   # the closed form, not P products


def test_closed_form_diagonal_of_a_parameter_subset():
    loss = _mlp_loss()
    params = _params(loss)
    sub = {"2.weight": params["2.weight"]}
    H, layout = _dense(loss, sub)
    torch.testing.assert_close(hessian_diagonal(loss, sub)["2.weight"].reshape(-1), H.diagonal())


def test_generic_exact_trace_equals_dense_trace():
    A = torch.randn(6, 6, generator=torch.Generator().manual_seed(2), dtype=D)
    loss = lambda p: torch.tanh(p["a"] @ A @ p["b"]) + (p["a"] ** 4).sum()
    params = {"a": torch.linspace(-1, 1, 6, dtype=D), "b": torch.linspace(0.5, 2, 6, dtype=D)}
    H, _ = _dense(loss, params)
    assert float(hessian_trace(loss, params, method="exact")) == pytest.approx(float(H.trace()), rel=1e-12)


def test_trace_of_matrix_factorization_at_a_minimizer():
    # L(U, V) = ½‖UVᵀ − M‖² with M = UVᵀ: the Hessian is the Gauss-Newton part, whose
    # diagonal gives tr = m‖V‖_F² + n‖U‖_F² (U: m×r, V: n×r).
    g = torch.Generator().manual_seed(3)
    U, V = torch.randn(7, 2, generator=g, dtype=D), torch.randn(5, 2, generator=g, dtype=D)
    M = U @ V.T
    loss = lambda p: 0.5 * (p["U"] @ p["V"].T - M).square().sum()
    expected = 7 * V.square().sum() + 5 * U.square().sum()
    est = hessian_trace(loss, {"U": U, "V": V}, method="exact")
    assert float(est) == pytest.approx(float(expected), rel=1e-12)


def _quadratic(eigs, seed=4):
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=g, dtype=D)).Q
    A = Q @ torch.diag(torch.as_tensor(eigs, dtype=D)) @ Q.T
    return A, (lambda w: 0.5 * w @ A @ w), torch.zeros(len(eigs), dtype=D)


def test_hutchinson_is_unbiased_with_the_predicted_standard_error():
    A, loss, w = _quadratic(torch.linspace(-1, 3, 300))
    est = hessian_trace(loss, w, probes=400, method="hutchinson", generator=torch.Generator().manual_seed(5))
    # Var(vᵀAv) = 2(‖A‖_F² − Σ A_ii²) for Rademacher v
    predicted = math.sqrt(2 * (A.square().sum() - A.diagonal().square().sum()) / 400)
    assert est.method == "hutchinson" and est.probes == 400
    assert abs(float(est) - float(A.trace())) < 4 * predicted
    assert est.stderr == pytest.approx(predicted, rel=0.2)


def test_auto_uses_hutchpp_only_when_the_spectrum_decays():
    g = torch.Generator().manual_seed(6)
    decaying = 100.0 * 0.5 ** torch.arange(300.0)
    A, loss, w = _quadratic(decaying)
    est = hessian_trace(loss, w, probes=60, generator=g)
    assert est.method == "hutch++"
    assert float(est) == pytest.approx(float(A.trace()), rel=1e-6)
    _, flat_loss, w = _quadratic(torch.linspace(-1, 1.2, 300))
    assert hessian_trace(flat_loss, w, probes=60, generator=g).method == "hutchinson"


def test_hutchpp_beats_hutchinson_on_a_decaying_spectrum():
    A, loss, w = _quadratic(10.0 / (1 + torch.arange(300.0)) ** 2)
    errors = {m: [] for m in ("hutchinson", "hutch++")}
    for seed in range(5):
        for m in errors:
            est = hessian_trace(loss, w, probes=30, method=m, generator=torch.Generator().manual_seed(seed))
            errors[m].append(abs(float(est) - float(A.trace())))
    assert sum(errors["hutch++"]) < 0.5 * sum(errors["hutchinson"])


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_rtol_stops_on_the_confidence_interval_for_either_sign(sign):
    A, loss, w = _quadratic(torch.linspace(0.5, 1.5, 200))
    est = hessian_trace(lambda v: sign * loss(v), w, probes=2000, method="hutchinson", rtol=0.02,
                        generator=torch.Generator().manual_seed(7))
    assert 20 <= est.probes < 2000
    assert 1.96 * est.stderr <= 0.02 * abs(float(est))
    assert float(est) == pytest.approx(sign * float(A.trace()), rel=0.05)


def test_trace_is_differentiable_when_asked():
    loss = _mlp_loss(batches=(6,))
    params = {n: p.detach().clone().requires_grad_() for n, p in loss.params.items()}
    layout = _Layout(params)
    theta = layout.flatten(params).detach()
    dense_trace = lambda t: torch.func.hessian(lambda s: loss(layout.unflatten(s)))(t).trace()
    expected = torch.func.grad(dense_trace)(theta)
    for method in ("exact", "auto"):
        est = hessian_trace(loss, params, method=method, create_graph=True)
        got = torch.autograd.grad(est.value, list(params.values()))
        torch.testing.assert_close(torch.cat([x.reshape(-1) for x in got]), expected)
    # Hutchinson on a diagonal Hessian is exact for every Rademacher probe: f = Σ c_i w_i³ / 6
    # has H = diag(c ⊙ w) and ∂ tr H / ∂w = c.
    c = torch.tensor([1.0, -2.0, 3.0], dtype=D)
    w = torch.tensor([0.3, 0.1, -0.2], dtype=D, requires_grad=True)
    est = hessian_trace(lambda v: (c * v ** 3).sum() / 6, w, probes=2, method="hutchinson", create_graph=True)
    torch.testing.assert_close(torch.autograd.grad(est.value, w)[0], c)


def test_eigs_equal_dense_eigenvalues_with_small_residuals():
    loss = _mlp_loss()
    params = _params(loss)
    H, layout = _dense(loss, params)
    exact = torch.linalg.eigvalsh(H)
    largest, vectors = hessian_eigs(loss, params, k=4, tol=1e-8, return_vectors=True)
    torch.testing.assert_close(largest, exact.flip(0)[:4], rtol=1e-7, atol=1e-10)
    Y = layout.flatten_batch(vectors)
    torch.testing.assert_close(Y @ H, largest[:, None] * Y, rtol=0, atol=1e-6)
    torch.testing.assert_close(hessian_eigs(loss, params, k=2, which="smallest", tol=1e-8), exact[:2],
                               rtol=1e-7, atol=1e-10)
    both = hessian_eigs(loss, params, k=3, which="both", tol=1e-8)
    torch.testing.assert_close(both, torch.stack([exact[-1], exact[-2], exact[0]]), rtol=1e-7, atol=1e-10)


def test_eigs_warn_when_max_iter_is_hit():
    _, loss, w = _quadratic(torch.linspace(0, 1, 200))
    with pytest.warns(UserWarning, match="max_iter"):
        hessian_eigs(loss, w, k=3, max_iter=5)


def test_spectral_density_quadrature_is_exact_on_small_spectra():
    eigs = torch.tensor([-1.0, 0.5, 2.0, 2.5, 4.0], dtype=D)
    A, loss, w = _quadratic(eigs)
    sd = spectral_density(loss, w, runs=3, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(sd.nodes.sort(dim=1).values, eigs.expand(3, 5))
    torch.testing.assert_close(sd.weights.sum(1), torch.ones(3, dtype=D))
    # the first run's start vector is the generator's first Rademacher draw; the quadrature
    # reproduces its Rayleigh quotient vᵀAv / vᵀv exactly
    v = (2 * torch.randint(0, 2, (5,), generator=torch.Generator().manual_seed(8)) - 1).to(D)
    assert float((sd.weights[0] * sd.nodes[0]).sum()) == pytest.approx(float(v @ A @ v / 5), rel=1e-10)
    step = sd.grid[1] - sd.grid[0]
    assert float(sd.density.sum() * step) == pytest.approx(1.0, rel=1e-3)


def test_model_loss_weights_unequal_batches_by_size():
    whole, split = _mlp_loss(batches=(20,)), _mlp_loss(batches=(17, 3))
    v = torch.randn(_Layout(whole.params).numel, generator=torch.Generator().manual_seed(9), dtype=D)
    torch.testing.assert_close(HessianOperator(split, split.params).matvec(v),
                               HessianOperator(whole, whole.params).matvec(v))


def test_bad_arguments_raise_user_errors():
    _, loss, w = _quadratic(torch.ones(4))
    with pytest.raises(UserError, match="method"):
        hessian_trace(loss, w, method="power")
    with pytest.raises(UserError, match="probes"):
        hessian_trace(loss, w, probes=0)
    with pytest.raises(UserError, match="rtol"):
        hessian_trace(loss, w, rtol=1.5)
    with pytest.raises(UserError, match="k must"):
        hessian_eigs(loss, w, k=5)
    with pytest.raises(UserError, match="require grad"):
        hessian_trace(loss, w, create_graph=True)
    with pytest.raises(ShapeError):
        hvp(loss, w, torch.ones(3, dtype=D))
    with pytest.raises(ShapeError, match="scalar"):
        HessianOperator(lambda v: v * 2, w)
