import pytest

from dltheory.claims import Result, Results, get_claim
from dltheory.errors import ConfigError

CLAIM = get_claim("benign-landscapes")


def test_smoke_benign_problems_succeed_and_controls_fail():
    sweep = CLAIM.sweep("smoke")
    results = Results()
    for config in sweep.configs:
        for seed in sweep.seeds:
            o = CLAIM.run(config, seed, "cpu")
            results.append(Result(config, seed, "ok", o.metrics, o.curves))
    verdict = CLAIM.judge(results)
    # robust PCA from a random start is outside its theorem (which assumes a local
    # initialization); the verdict must say it failed there, and only there
    failed = {k for k, ok in verdict.details["checks"].items() if not ok}
    assert failed <= {k for k in verdict.details["checks"] if k.startswith("robust-pca")}
    assert all(r.metrics["success_fraction"] <= 0.1 for r in results if r.config["control"])
    maxcut = next(r for r in results if r.config["problem"] == "max-cut" and not r.config["control"])
    assert maxcut.metrics["rounded_cut"] <= maxcut.metrics["sdp_value"] + 1e-6  # the SDP bounds every cut


def test_quick_covers_every_problem_and_full_three_sizes_with_controls():
    sweep = CLAIM.sweep("quick")
    benign = [c for c in sweep.configs if not c["control"]]
    assert len({c["problem"] for c in benign}) == 9
    full = [c for c in CLAIM.sweep("full").configs if not c["control"]]
    assert all(len({c["size"] for c in full if c["problem"] == p}) == 3 for p in {c["problem"] for c in full})
    assert all(c["starts"] * len(sweep.seeds) >= 100 for c in sweep.configs)
    assert {c["control"] for c in sweep.configs if c["control"]} >= {"max-cut, p = 1", "max-cut, p = 2"}


def _result(problem="phase-retrieval", control="", rate=1.0):
    return Result({"problem": problem, "control": control, "size": 8}, 0, "ok",
                  {"success_fraction": rate, "starts": 100}, {})


@pytest.mark.parametrize("bad, check", [
    (_result(rate=0.5), "phase-retrieval (size 8): global optimum"),
    (_result("max-cut", "max-cut, p = 1", rate=0.5), "max-cut, p = 1 (size 8): fails"),
])
def test_verdict_fails_when_a_problem_or_control_breaks_the_criterion(bad, check):
    good = [_result(), _result("max-cut", "max-cut, p = 1", rate=0.0)]
    assert CLAIM.judge(Results(good)).passed
    verdict = CLAIM.judge(Results([*good, bad]))
    assert verdict.passed is False and verdict.details["checks"][check] is False
    assert check in verdict.measured


def test_unknown_problem_is_a_config_error():
    with pytest.raises(ConfigError):
        CLAIM.validate({**CLAIM.sweep("smoke").configs[0], "problem": "sudoku"})
