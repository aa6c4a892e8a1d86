"""Run a claim end to end: sweep → execute → judge → figure → record the verdict."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from dltheory.claims.base import Claim, Result, Results, Verdict, apply_overrides
from dltheory.engine import PROFILES, RunRow, Store, Sweep, execute
from dltheory.errors import ConfigError


@dataclass
class ClaimRun:
    claim: Claim
    profile: str
    sweep: Sweep
    results: Results
    verdict: Verdict
    figure: Path | None
    skipped: int
    wall_s: float
    device: str = "cpu"  # where the runs ran
    requested_device: str = "cpu"  # what --device asked (a cpu_only claim runs on the CPU)

    def to_dict(self) -> dict[str, Any]:
        return {
            "claim": self.claim.id,
            "profile": self.profile,
            "verdict": self.verdict.to_dict(),
            "counts": self.results.counts(),
            "skipped_finished": self.skipped,
            "wall_s": round(self.wall_s, 3),
            "device": self.device,
            "figure": str(self.figure) if self.figure else None,
        }


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    return profile


def build_sweep(claim: Claim, profile: str, *, seeds: int | None = None,
                overrides: Iterable[str] = ()) -> Sweep:
    """The claim's sweep for ``profile`` with ``--seeds`` and ``--set`` applied and validated."""
    sweep = claim.sweep(check_profile(profile))
    sweep.claim_id, sweep.profile = claim.id, profile
    if seeds is not None:
        if seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {seeds}")
        sweep.seeds = list(range(seeds))
    sweep = apply_overrides(sweep, overrides)
    for config in sweep.configs:
        claim.validate(config)
    return sweep


def results_from_rows(rows: Iterable[dict[str, Any]]) -> Results:
    return Results(Result(r["config"], r["seed"], r["status"], r["metrics"], r["curves"],
                          r["error"], r["wall_s"]) for r in rows)


def judge(claim: Claim, results: Results) -> Verdict:
    """``claim.judge`` on the ok runs only; the verdict states how many runs it rests on."""
    ok = results.ok
    if not ok:
        return Verdict.nothing_to_judge(claim.criterion)
    verdict = claim.judge(ok)
    verdict.n_runs = len(ok)
    return verdict


def save_figure(claim: Claim, results: Results, path: Path) -> Path | None:
    """Draw ``claim.figure`` from stored results into ``path`` (PNG); ``None`` if no figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not results.ok:
        return None
    fig = claim.figure(results.ok)
    if fig is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def run_claim(claim: Claim, store: Store, *, profile: str = "quick", seeds: int | None = None,
              overrides: Iterable[str] = (), backend: str = "local", workers: int | None = None,
              device: str = "cpu", resume: bool = True, address: str | None = None,
              on_rows: Callable[[list[RunRow]], None] | None = None,
              on_start: Callable[[int], None] | None = None) -> ClaimRun:
    """Execute the claim's sweep, judge the stored results and record the verdict."""
    sweep = build_sweep(claim, profile, seeds=seeds, overrides=overrides)
    if on_start:
        on_start(len(sweep))
    outcome = execute(claim, sweep, store, backend=backend, workers=workers, device=device,
                      resume=resume, on_rows=on_rows, address=address)
    results = results_from_rows(store.runs(outcome.keys))
    verdict = judge(claim, results)
    figure = save_figure(claim, results, store.path.parent / "figures" / f"{claim.id}-{profile}.png")
    store.finish_sweep(outcome.sweep_id, verdict.to_dict(), results.counts(),
                       str(figure) if figure else None)
    return ClaimRun(claim, profile, sweep, results, verdict, figure, outcome.skipped, outcome.wall_s,
                    outcome.device, device)


def last_results(claim: Claim, store: Store, profile: str | None = None):
    """(sweep record, results, verdict) of the claim's newest finished sweep, or ``None``."""
    record = store.last_sweep(claim.id, profile)
    if record is None:
        return None
    results = results_from_rows(store.runs(record["keys"]))
    verdict = Verdict.from_dict(record["verdict"]) if record["verdict"] else judge(claim, results)
    return record, results, verdict
