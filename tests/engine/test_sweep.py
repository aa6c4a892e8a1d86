import torch

from dltheory.engine import Sweep, config_hash, make_generator, run_seed


def test_config_hash_ignores_key_order_and_changes_with_values():
    assert config_hash({"a": 1, "b": 2.0}) == config_hash({"b": 2.0, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_run_generators_depend_on_claim_config_and_seed_only():
    draw = lambda *key: torch.randn(3, generator=make_generator(*key)).tolist()  # noqa: E731
    assert draw("c", "h", 0) == draw("c", "h", 0)
    assert draw("c", "h", 0) != draw("c", "h", 1)
    assert draw("c", "h", 0) != draw("other", "h", 0)
    assert 0 <= run_seed("c", "h", 0) < 2**63


def test_grid_is_the_cartesian_product_over_the_base():
    configs = Sweep.grid({"a": 0, "b": 1}, {"a": [1, 2], "c": ["x", "y"]})
    assert configs == [{"a": 1, "b": 1, "c": "x"}, {"a": 1, "b": 1, "c": "y"},
                       {"a": 2, "b": 1, "c": "x"}, {"a": 2, "b": 1, "c": "y"}]
    sweep = Sweep(configs, [0, 1, 2])
    assert len(sweep) == len(list(sweep.runs())) == 12
