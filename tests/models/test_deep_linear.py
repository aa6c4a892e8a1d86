import pytest
import torch

from dltheory.errors import ConfigError, ShapeError
from dltheory.models.deep_linear import DeepLinear, matmul, preconditioned_gradient, psd_power


def _gens(n, start=0):
    return [torch.Generator().manual_seed(start + k) for k in range(n)]


@pytest.mark.parametrize("dims", [[4, 4, 4, 4], [3, 5, 6, 2], [2, 7, 5], [6, 3]])
def test_balanced_init_is_balanced(dims):
    net = DeepLinear(dims, generators=_gens(3), scale=0.7)
    assert net.balancedness().max() < 1e-12
    Ws = list(net.weights)
    for A, B in zip(Ws[:-1], Ws[1:]):  # W_{j+1}ᵀ W_{j+1} = W_j W_jᵀ
        torch.testing.assert_close(B.mT @ B, A @ A.mT, rtol=0, atol=1e-12)


def test_gaussian_init_is_not_balanced():
    net = DeepLinear([4, 4, 4], generators=_gens(2), init="gaussian")
    assert net.balancedness().min() > 0.1


def test_balanced_init_factors_the_given_end_to_end_matrix():
    W_e = torch.randn(2, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    net = DeepLinear([3, 4, 4, 2], generators=_gens(2), end_to_end=W_e)
    torch.testing.assert_close(net.end_to_end(), W_e.expand(2, 2, 3), rtol=0, atol=1e-12)
    assert not torch.equal(net.weights[1][0], net.weights[1][1])  # random hidden frames


def test_batched_seeds_equal_each_seed_alone_bit_for_bit():
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    for init in ("balanced", "gaussian"):
        together = DeepLinear([3, 5, 5, 2], generators=_gens(5), init=init)
        grads = together.layer_gradients(together(x).sum(1)[..., None].expand(5, 2, 3))
        for k in range(5):
            alone = DeepLinear([3, 5, 5, 2], generators=_gens(1, k), init=init)
            for W, V in zip(together.weights, alone.weights):
                assert torch.equal(W[k], V[0])
            assert torch.equal(together(x)[k], alone(x)[0])
            assert torch.equal(together.end_to_end()[k], alone.end_to_end()[0])
            g_alone = alone.layer_gradients(alone(x).sum(1)[..., None].expand(1, 2, 3))
            assert all(torch.equal(a[k], b[0]) for a, b in zip(grads, g_alone))


def test_forward_is_the_end_to_end_map():
    net = DeepLinear([3, 5, 4, 2], generators=_gens(2), init="gaussian")
    x = torch.randn(6, 3, dtype=torch.float64)
    torch.testing.assert_close(net(x), x @ net.end_to_end().mT)


def test_layer_gradients_equal_autograd():
    net = DeepLinear([3, 5, 4, 2], generators=_gens(2), init="gaussian")
    target = torch.randn(2, 3, dtype=torch.float64)
    loss = ((net.end_to_end() - target) ** 4).sum()
    auto = torch.autograd.grad(loss, list(net.weights))
    G = (4 * (net.end_to_end() - target) ** 3).detach()
    for a, b in zip(auto, net.layer_gradients(G)):
        torch.testing.assert_close(a, b)


def test_preconditioner_for_one_output_is_theorem_2():
    # Arora et al. 2018, Theorem 2: w ↦ ‖w‖^{2−2/N} (∇ + (N−1) Pr_w ∇) for a row vector w.
    g = torch.Generator().manual_seed(1)
    w, grad = (torch.randn(1, 6, generator=g, dtype=torch.float64) for _ in range(2))
    for N in (1, 2, 3, 5):
        u = w / w.norm()
        expected = w.norm() ** (2 - 2 / N) * (grad + (N - 1) * (grad @ u.T) * u)
        torch.testing.assert_close(preconditioned_gradient(w, grad, N), expected)


def test_preconditioner_matches_one_small_gd_step_of_a_balanced_net():
    net = DeepLinear([3, 4, 4, 3], generators=_gens(1))
    # G from its own generator: drawn from the global RNG it changed with the tests run before
    G = torch.randn(1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    W_e, eta = net.end_to_end(), 1e-6
    stepped = [W - eta * dW for W, dW in zip(net.weights, net.layer_gradients(G))]
    actual = stepped[2] @ stepped[1] @ stepped[0]
    predicted = W_e - eta * preconditioned_gradient(W_e, G, 3)
    # the deviation is second order, η²‖G‖² times a constant of this net (2–18 over 30 draws
    # of G); a first-order error would be ~η‖G‖ = 1e4 times larger
    assert (actual - predicted).norm() < 100 * eta ** 2 * G.norm() ** 2


def test_psd_power_and_batch_invariant_matmul():
    A = torch.randn(3, 4, 4, dtype=torch.float64)
    P = A @ A.mT
    torch.testing.assert_close(matmul(psd_power(P, 0.5), psd_power(P, 0.5)), P)
    torch.testing.assert_close(psd_power(P, 0), torch.eye(4, dtype=torch.float64).expand(3, 4, 4))
    torch.testing.assert_close(matmul(A, P), A @ P)


@pytest.mark.parametrize("kwargs, error", [
    (dict(dims=[3]), ConfigError),
    (dict(dims=[3, 0, 2]), ConfigError),
    (dict(dims=[3, 1, 2]), ConfigError),  # hidden width below min(d_in, d_out)
    (dict(dims=[3, 2], init="orthogonal"), ConfigError),
    (dict(dims=[3, 2], scale=-1.0), ConfigError),
    (dict(dims=[3, 2], init="gaussian", end_to_end=torch.zeros(2, 3)), ConfigError),
    (dict(dims=[3, 2], end_to_end=torch.zeros(3, 2)), ShapeError),
])
def test_bad_arguments_raise_user_errors(kwargs, error):
    with pytest.raises(error):
        DeepLinear(generators=_gens(1), **kwargs)
