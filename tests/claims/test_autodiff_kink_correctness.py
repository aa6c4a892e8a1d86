import pytest

from dltheory.claims import Result, Results, get_claim

CLAIM = get_claim("autodiff-kink-correctness")


def test_smoke_programs_part_is_all_correct_and_pytorch_is_not():
    config = CLAIM.sweep("smoke").configs[0]
    assert config["part"] == "programs"
    m = CLAIM.run(config, 0, "cpu").metrics
    assert m["ours_correct"] == 1.0 and m["checked"] > 0
    assert m["torch_correct[relu(x) − relu(−x)]"] == 0.0  # PyTorch says 0, the truth is 1
    assert m["torch_correct"] < 1.0


def test_tie_experiment_counts_are_consistent():
    config = next(c for c in CLAIM.sweep("smoke").configs if c["part"] == "ties")
    m = CLAIM.run(config, 0, "cpu").metrics
    assert 0 <= m["changed_batches"] <= m["tie_batches"] <= m["batches"] > 0


def _programs(ours=1.0, theirs=0.5):
    return Result({"part": "programs"}, 0, "ok",
                  {"ours_correct": ours, "torch_correct": theirs, "checked": 10}, {})


def _ties(precision, share):
    return Result({"part": "ties", "precision": precision, "width": 8, "batch": 8}, 0, "ok",
                  {"tie_share": share, "changed_share": 0.0}, {})


@pytest.mark.parametrize("results, check", [
    ([_programs(ours=0.99)], "dltheory 100% correct"),
    ([_programs(theirs=1.0)], "PyTorch wrong on some"),
    ([_programs(), _ties("float64", 0.1)], "no ties in float64"),
    ([_programs(), _ties("float32", 0.2), _ties("bfloat16", 0.1)], "16-bit tie more than float32"),
])
def test_verdict_fails_when_a_check_breaks(results, check):
    verdict = CLAIM.judge(Results(results))
    assert verdict.passed is False and verdict.details["checks"][check] is False
