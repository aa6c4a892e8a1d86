"""A small unbatched claim for engine tests: real torch work, an optional sleep per run,
a seed that fails and one that diverges (so every status is exercised)."""

from __future__ import annotations

import os
import time

import torch

from dltheory.claims.base import Claim, Outcome, Results, Verdict
from dltheory.engine import Sweep


class ToyClaim(Claim):
    id = "toy-least-squares"
    title = "toy"
    source = "tests"
    statement = "GD on a random least-squares problem reduces the loss."
    criterion = "final loss < initial loss in every ok run"

    def sweep(self, profile: str) -> Sweep:
        n_seeds = int(os.environ.get("TOY_SEEDS", "6"))
        return Sweep(Sweep.grid({"d": 5, "steps": 50, "fail_seed": -1, "nan_seed": -1},
                                {"d": [3, 5]}), list(range(n_seeds)), profile, self.id)

    def run(self, config, seed, device):
        piddir = os.environ.get("TOY_PIDDIR")
        if piddir:  # lets a test find (and kill) the worker running this
            open(os.path.join(piddir, str(os.getpid())), "w").close()
        time.sleep(float(os.environ.get("TOY_SLEEP", "0")))
        if seed == config["fail_seed"]:
            raise RuntimeError("planned failure")
        g = self.generator(config, seed, device)
        A = torch.randn(20, config["d"], generator=g, dtype=torch.float64)
        b = torch.randn(20, generator=g, dtype=torch.float64)
        x = torch.zeros(config["d"], dtype=torch.float64)
        first = float(((A @ x - b) ** 2).mean())
        for _ in range(config["steps"]):
            x = x - 0.01 * 2 * A.T @ (A @ x - b) / 20
        last = float(((A @ x - b) ** 2).mean())
        if seed == config["nan_seed"]:
            last = float("nan")
        return Outcome({"first": first, "last": last, "x0": float(x[0])}, {"x": x.tolist()})

    def judge(self, results: Results) -> Verdict:
        ok = all(r.metrics["last"] < r.metrics["first"] for r in results)
        return Verdict(ok, f"{len(results)} runs", self.criterion, len(results))


CLAIM = ToyClaim()
