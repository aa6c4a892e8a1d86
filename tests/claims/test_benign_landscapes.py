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
    # controls whose optimum is generically unreachable must fail (the others only report a rate)
    assert all(r.metrics["success_fraction"] <= 0.1 for r in results
               if r.config["control"] in ("max-cut, p = 1", "matrix-sensing, m = n < n·r"))
    # every failed start is diagnosed at its end point
    kinds = ("spurious", "saddle", "unconverged", "unclassified", "optimal_value")
    failed_starts = [round((1 - r.metrics["success_fraction"]) * r.metrics["starts"]) for r in results]
    assert [sum(r.metrics[k] for k in kinds) for r in results] == failed_starts
    maxcut = next(r for r in results if r.config["problem"] == "max-cut" and not r.config["control"])
    assert maxcut.metrics["rounded_cut"] <= maxcut.metrics["sdp_value"] + 1e-6  # the SDP bounds every cut


def test_quick_covers_every_problem_and_full_three_sizes_with_controls():
    sweep = CLAIM.sweep("quick")
    benign = [c for c in sweep.configs if not c["control"]]
    assert len({c["problem"] for c in benign}) == 10
    full = [c for c in CLAIM.sweep("full").configs if not c["control"]]
    assert all(len({c["size"] for c in full if c["problem"] == p}) == 3 for p in {c["problem"] for c in full})
    assert all(c["starts"] * len(sweep.seeds) >= 100 for c in sweep.configs)
    assert {c["control"] for c in sweep.configs if c["control"]} >= {"max-cut, p = 1", "max-cut, p = 2"}


def _result(problem="phase-retrieval", control="", rate=1.0, **diagnosis):
    return Result({"problem": problem, "control": control, "size": 8}, 0, "ok",
                  {"success_fraction": rate, "starts": 100, **diagnosis}, {})


@pytest.mark.parametrize("bad, check", [
    (_result(rate=0.5), "phase-retrieval (size 8): global optimum"),
    (_result("max-cut", "max-cut, p = 1", rate=0.5), "max-cut, p = 1 (size 8): fails"),
    (_result("max-cut", "max-cut, p = 2", rate=1.0), "max-cut, p = 2 (size 8): fails"),
    (_result("relu-landscape-design", "relu square loss", rate=0.995), "relu square loss (size 8): fails"),
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


def test_verdict_reports_the_diagnosis_of_failed_starts():
    bad = _result("matrix-completion", rate=0.96, spurious=3, unconverged=1, spurious_loss_gap=0.035)
    verdict = CLAIM.judge(Results([bad]))
    assert not verdict.passed
    expected = "3 at 2nd-order critical points above the optimum (loss gap ≤ 0.035), 1 unconverged"
    assert expected in verdict.measured


def test_failed_starts_are_classified_by_the_dense_hessian():
    import torch

    from dltheory.claims.benign_landscapes import _classify_failures

    class Double:  # f(x, y) = (x² − 1)² + y²·(x + 2): minima (±1, 0); the global one is only x = +1 here
        manifold, global_min_value = None, 0.0

    loss = lambda v: (v[0] ** 2 - 1) ** 2 + v[1] ** 2 * (v[0] + 2) + 0.0 * v.sum()  # noqa: E731
    points = torch.tensor([[-1.0, 0.0], [0.0, 0.0], [0.5, 0.0]], dtype=torch.float64)
    counts = _classify_failures(Double(), loss, points, [False, False, False], "double")
    # (−1, 0): gradient 0 and loss 0 = the optimum → "optimal value, not recovered"; (0, 0): saddle
    # (λ_min = −4); (0.5, 0): gradient 1.5 → unconverged
    kinds = (counts["optimal_value"], counts["saddle"], counts["unconverged"], counts["spurious"])
    assert kinds == (1, 1, 1, 0)
    shifted = lambda v: loss(v) + 0.5 * (v[0] < 0).to(v.dtype)  # noqa: E731  a spurious minimum at (−1, 0)
    counts = _classify_failures(Double(), shifted, points[:1], [False], "double")
    assert counts["spurious"] == 1 and counts["spurious_loss_gap"] == 0.5


def test_native_batched_losses_equal_the_problems_loss_per_start():
    import torch
    from torch.func import vmap

    from dltheory.claims.benign_landscapes import _PROBLEMS, _batched_loss

    for name in ("quadratic-net", "relu-landscape-design"):
        gen = torch.Generator().manual_seed(0)
        problem = _PROBLEMS[name][0](5 if name == "quadratic-net" else 6, gen)
        X = torch.stack([problem.init(gen) for _ in range(4)])
        torch.testing.assert_close(_batched_loss(problem)(X), vmap(problem.loss)(X), rtol=1e-13, atol=1e-15)


def test_stacked_starts_equal_each_start_run_alone_bit_for_bit():
    import torch

    from dltheory.claims._many_starts import descend
    from dltheory.claims.benign_landscapes import _PROBLEMS, _batched_loss
    from dltheory.optim import GD

    gen = torch.Generator().manual_seed(1)
    problem = _PROBLEMS["relu-landscape-design"][0](6, gen)
    starts = torch.stack([problem.init(gen) for _ in range(3)])
    loss = _batched_loss(problem)
    together = descend(loss, starts, lambda p: GD(p, lr=0.05), 50)
    alone = torch.cat([descend(loss, x[None], lambda p: GD(p, lr=0.05), 50) for x in starts])
    assert torch.equal(together, alone)
