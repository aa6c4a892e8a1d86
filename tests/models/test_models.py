import math

import pytest
import torch

from dltheory.errors import ConfigError, ShapeError, UserError
from dltheory.models import MLP, QuadraticNet, ResNet, TwoLayer, c_sigma


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


BUILDERS = {
    "two-layer-ntk": lambda g: TwoLayer(4, 7, generators=g),
    "two-layer-mean-field": lambda g: TwoLayer(4, 7, generators=g, scaling="mean-field",
                                              outer_init="gaussian", train_outer=False),
    "quadratic": lambda g: QuadraticNet(4, 5, generators=g),
    "mlp": lambda g: MLP(4, [6, 5], generators=g, activation="tanh"),
    "resnet": lambda g: ResNet(4, 6, 3, generators=g, activation="softplus"),
}


@pytest.mark.parametrize("name", BUILDERS)
def test_seed_k_of_a_batch_equals_the_model_built_from_generator_k(name):
    build = BUILDERS[name]
    batched = build(_gens([3, 1, 4]))
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    xs = torch.randn(3, 9, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out, outs = batched(x), batched(xs)
    for k, seed in enumerate([3, 1, 4]):
        alone = build(_gens([seed]))
        for (n1, p1), (n2, p2) in zip(batched.state_dict().items(), alone.state_dict().items()):
            assert n1 == n2 and torch.equal(p1[k], p2[0]), (name, n1)
        assert torch.allclose(out[k], alone(x)[0], rtol=0, atol=1e-12)
        assert torch.allclose(outs[k], alone(xs[k:k + 1])[0], rtol=0, atol=1e-12)
        assert torch.equal(batched.seed(k)(x)[0], alone(x)[0])
    assert not torch.equal(out[0], out[1])


@pytest.mark.parametrize("name", BUILDERS)
def test_seeds_keeps_the_rows_asked_in_their_order_with_their_generators(name):
    gens = _gens([3, 1, 4, 1])
    batched = BUILDERS[name](gens)
    kept = batched.seeds([2, 0])
    for (n1, p1), (n2, p2) in zip(batched.state_dict().items(), kept.state_dict().items()):
        assert n1 == n2 and torch.equal(p2, p1[[2, 0]]), (name, n1)
    assert kept.n_seeds == 2 and kept.generators[0] is gens[2] and kept.generators[1] is gens[0]
    next(kept.parameters()).data.zero_()  # a copy: the batch keeps its numbers
    assert not torch.equal(next(batched.parameters())[2], next(kept.parameters())[0])


@pytest.mark.parametrize("rows", [[], [4], [-1], [0.0]])
def test_seeds_refuses_bad_rows(rows):
    with pytest.raises(ConfigError, match="seed indices"):
        BUILDERS["mlp"](_gens([0, 1, 2, 3])).seeds(rows)


@pytest.mark.parametrize("name", BUILDERS)
def test_gradient_of_the_summed_loss_is_each_seeds_own_gradient(name):
    build = BUILDERS[name]
    batched = build(_gens([0, 1]))
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    batched(x).square().sum().backward()
    alone = build(_gens([1]))
    alone(x).square().sum().backward()
    for p, q in zip(batched.parameters(), alone.parameters()):
        assert torch.allclose(p.grad[1], q.grad[0], rtol=0, atol=1e-12)


def test_two_layer_is_the_scaled_sum_of_its_neurons():
    net = TwoLayer(3, 50, generators=_gens([0]), activation="tanh")
    x = torch.randn(4, 3, dtype=torch.float64)
    manual = sum(net.a[0, r] * torch.tanh(x @ net.W[0, r]) for r in range(50)) / math.sqrt(50)
    assert torch.allclose(net(x)[0], manual, rtol=0, atol=1e-12)
    assert set(net.a[0].tolist()) == {-1.0, 1.0}


def test_ntk_output_stays_order_one_and_mean_field_output_vanishes_with_width():
    # f(x) = m^{-1/2} Σ ±σ(w_rᵀx) is a CLT sum (variance E σ(z)² = 1/2 for ReLU, ‖x‖ = 1);
    # with 1/m it is a law-of-large-numbers average of mean-zero terms, std ≈ √(1/(2m)) ≈ 0.016.
    x = torch.nn.functional.normalize(torch.randn(200, 6, dtype=torch.float64), dim=1)
    ntk, mf = (TwoLayer(6, 2000, generators=_gens(range(4)), scaling=s)
               for s in ("ntk", "mean-field"))
    with torch.no_grad():
        assert 0.55 < float(ntk(x).std()) < 0.85
        assert float(mf(x).std()) < 0.03
        assert torch.allclose(ntk(x) / math.sqrt(2000), mf(x), rtol=0, atol=1e-12)


def test_only_trained_parameters_are_parameters():
    fixed = TwoLayer(3, 4, generators=_gens([0]), train_outer=False)
    assert [n for n, _ in fixed.named_parameters()] == ["W"] and "a" in dict(fixed.named_buffers())
    assert [n for n, _ in QuadraticNet(3, 4, generators=_gens([0])).named_parameters()] == ["W"]
    assert {n for n, _ in ResNet(3, 4, 2, generators=_gens([0])).named_parameters()} == {
        "W_in", "W", "a"}


def test_quadratic_net_is_the_quadratic_form_of_its_matrix():
    net = QuadraticNet(5, 8, generators=_gens([0, 1]))
    x = torch.randn(6, 5, dtype=torch.float64)
    M = net.matrix()
    assert torch.allclose(net(x), torch.einsum("nd,sde,ne->sn", x, M, x), rtol=0, atol=1e-12)
    assert torch.allclose(M, M.mT)


def test_c_sigma_normalizes_the_second_moment():
    assert c_sigma("relu") == pytest.approx(2.0, abs=1e-9)
    assert c_sigma("identity") == pytest.approx(1.0, abs=1e-9)
    assert c_sigma("square") == pytest.approx(1 / 3, abs=1e-9)


@pytest.mark.parametrize("model", [MLP(20, [1500, 1500], generators=_gens([0])),
                                   ResNet(20, 1500, 3, generators=_gens([0]))])
def test_deep_nets_keep_unit_norm_hidden_layers_at_init(model):
    # Du et al. 2019, Lemma: ‖x⁽ʰ⁾‖ concentrates near ‖x‖ = 1 for wide layers.
    x = torch.nn.functional.normalize(torch.randn(5, 20, dtype=torch.float64), dim=1)
    h = model._layer(model.weights[0] if isinstance(model, MLP) else model.W_in, x)
    assert torch.allclose(h.norm(dim=-1), torch.ones(1, 5, dtype=torch.float64), atol=0.1)


def test_resnet_of_depth_one_has_no_residual_branch_and_matches_the_mlp_layer():
    res = ResNet(3, 10, 1, generators=_gens([0]))
    mlp = MLP(3, [10], generators=_gens([0]))
    x = torch.randn(4, 3, dtype=torch.float64)
    assert res.W.shape == (1, 0, 10, 10)
    assert torch.equal(res(x), mlp(x))


@pytest.mark.parametrize("bad", [
    lambda: TwoLayer(3, 0, generators=_gens([0])),
    lambda: TwoLayer(3, 4, generators=[]),
    lambda: TwoLayer(3, 4, generators=torch.Generator()),
    lambda: TwoLayer(3, 4, generators=_gens([0]), scaling="xavier"),
    lambda: TwoLayer(3, 4, generators=_gens([0]), activation="gelu"),
    lambda: TwoLayer(3, 4, generators=_gens([0]), outer_init="zeros"),
    lambda: MLP(3, [], generators=_gens([0])),
    lambda: ResNet(3, 4, 0, generators=_gens([0])),
    lambda: ResNet(3, 4, 2, generators=_gens([0]), c_res=-1.0),
])
def test_bad_configuration_is_a_config_error(bad):
    with pytest.raises(ConfigError):
        bad()


@pytest.mark.parametrize("x", [
    torch.zeros(5, 4), torch.zeros(5), torch.zeros(1, 3, 5, 3), torch.zeros(2, 5, 3),
    torch.full((5, 3), float("nan")),
])
def test_bad_input_is_a_shape_error(x):
    net = TwoLayer(3, 4, generators=_gens([0, 1, 2]))
    with pytest.raises(ShapeError):
        net(x)
    assert issubclass(ShapeError, UserError)
