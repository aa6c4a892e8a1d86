import pytest
import torch

from dltheory import ConfigError
from dltheory.autodiff import exact_kinks
from dltheory.claims import Result, Results, get_claim
from dltheory.claims.autodiff_kink_correctness import _CONVENTIONS

CLAIM = get_claim("autodiff-kink-correctness")


def _config(which, profile="smoke", **over):
    return {**next(c for c in CLAIM.sweep(profile).configs if c["part"] == which), **over}


def test_smoke_programs_part_is_all_correct_and_pytorch_is_not():
    config = CLAIM.sweep("smoke").configs[0]
    assert config["part"] == "programs"
    m = CLAIM.run(config, 0, "cpu").metrics
    assert m["ours_correct"] == 1.0 and m["checked"] > 0
    assert m["torch_correct[relu(x) − relu(−x)]"] == 0.0  # PyTorch says 0, the truth is 1
    assert m["torch_correct"] < 1.0


def test_the_two_conventions_differ_only_at_zero_and_exact_kinks_makes_them_agree():
    x0 = torch.tensor([-1.0, 0.0, 2.0])
    grads = {}
    for s, act in _CONVENTIONS.items():
        x = x0.clone().requires_grad_(True)
        (grads[s],) = torch.autograd.grad(act(x).sum(), x)
    assert grads[0].tolist() == [0.0, 0.0, 1.0] and grads[1].tolist() == [0.0, 1.0, 1.0]
    resolved = []
    for act in _CONVENTIONS.values():
        x = x0.clone().requires_grad_(True)
        with exact_kinks(direction={id(x): torch.tensor([0.0, -1.0, 0.0])}):
            (g,) = torch.autograd.grad(act(x).sum(), x)
        resolved.append(g.tolist())
    assert resolved[0] == resolved[1] == [0.0, 0.0, 1.0]  # v points left of the kink


def test_bertoin_measure_counts_are_consistent():
    config = _config("init", precision="bfloat16")
    m = CLAIM.run(config, 0, "cpu").metrics
    for b in config["batches"]:
        assert 0 <= m[f"changed_inits[{b}]"] <= m["inits"] == config["inits"]
        assert 0.0 <= m[f"tie_batch_share[{b}]"] <= 1.0
    m64 = CLAIM.run(_config("init", precision="float64"), 0, "cpu").metrics
    assert m64["ties_per_million"] == 0.0


def test_trained_pair_differs_with_pytorch_and_coincides_under_exact_kinks():
    # bfloat16, width 256, one epoch: relu'(0) changes PyTorch's run (seed chosen to hit a tie)
    config = _config("trained", "quick", precision="bfloat16", epochs=1)
    m = CLAIM.run(config, 0, "cpu").metrics
    assert m["weights_differ[plain]"] == 1.0 and m["max_weight_change[plain]"] > 0
    assert m["weights_differ[exact]"] == 0.0 and m["max_weight_change[exact]"] == 0.0
    assert m["accuracy_relu0[exact]"] == m["accuracy_relu1[exact]"]


@pytest.mark.parametrize("bad", [dict(part="other"), dict(precision="int8"), dict(directions=0)])
def test_bad_config_raises_a_config_error(bad):
    with pytest.raises(ConfigError):
        CLAIM.validate(_config("programs", **bad))


@pytest.mark.parametrize("part, bad", [("init", dict(batches=[])), ("init", dict(batches=[0])),
                                       ("init", dict(inits=0)), ("trained", dict(epochs=0)),
                                       ("trained", dict(batch=5000))])
def test_bad_part_config_raises_a_config_error(part, bad):
    with pytest.raises(ConfigError):
        CLAIM.validate(_config(part, **bad))


def _programs(ours=1.0, theirs=0.5):
    return Result({"part": "programs"}, 0, "ok",
                  {"ours_correct": ours, "torch_correct": theirs, "checked": 10}, {})


def _init(precision, changed):
    return Result({"part": "init", "precision": precision, "width": 8, "batches": [16]}, 0, "ok",
                  {"changed_inits[16]": changed, "inits": 4, "ties_per_million": 1.0}, {})


def _trained(plain=1.0, exact=0.0):
    metrics = {"weights_differ[plain]": plain, "weights_differ[exact]": exact}
    for name in ("plain", "exact"):
        metrics.update({f"accuracy_relu0[{name}]": 0.9, f"accuracy_relu1[{name}]": 0.9})
    return Result({"part": "trained", "precision": "bfloat16", "width": 8, "epochs": 1}, 0, "ok",
                  metrics, {})


_GOOD = [_programs(), _init("float64", 0), _init("float32", 1), _init("bfloat16", 4), _trained()]


@pytest.mark.parametrize("replace, check", [
    ([_programs(ours=0.99)], "dltheory 100% correct"),
    ([_programs(theirs=1.0)], "PyTorch wrong on some"),
    ([_init("float64", 1)], "float64: no init changed"),
    ([_init("bfloat16", 1)], "16-bit systematic (≥ 50% of inits)"),  # 25% < 50%
    ([_init("bfloat16", 3), _init("float32", 4)], "16-bit ≥ float32"),  # 75% < 100%
    ([_trained(exact=1.0)], "exact_kinks: trained runs coincide"),
    ([_trained(plain=0.0)], "PyTorch: relu'(0) changes training"),
])
def test_verdict_fails_when_a_check_breaks(replace, check):
    assert CLAIM.judge(Results(_GOOD)).passed is True
    key = lambda r: (r.config["part"], r.config.get("precision"))  # noqa: E731
    new = {key(r): r for r in replace}
    verdict = CLAIM.judge(Results([new.get(key(r), r) for r in _GOOD]))
    assert verdict.passed is False and verdict.details["checks"][check] is False
