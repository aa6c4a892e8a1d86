"""The full profile's wall time per claim, estimated from runs with its steps cut.

A whole full profile is hours of CPU (it is the workload of the Ray backend and the GPU), so
it is estimated, not run: each claim's full sweep (every config, every seed) runs in a fresh
store with every step count (``steps``, ``iterations``, … of ``_configs.STEP_KEYS``) cut to
a fraction f of its value, then to 2f, then to f again (the first run only warms caches and
imports up). f is ``--fraction``, raised for a claim whose smallest step count would get
fewer than ``--min-steps`` steps (a step count of 1 or 2 would drown in the setup's noise).
The time is taken as linear in f, T(f) = a + b·f (a: data, references, certificates; b: the
steps), and T(1) = a + b is the estimate. What it misses, said in the table: a claim with
no step key is run whole (its time is measured, not estimated, and only with ``--whole``:
convac's SVDs took over 19 min); a cut config that the claim refuses is reported; runs that
stop early (seeds that fit, races that arrive) are charged their full step budget, so the
estimate is an upper bound for them; costs that grow with the steps otherwise than linearly
(checkpoints are log-spaced, curvature refreshed per stretch) are extrapolated as if linear.

    python bench/full_estimate.py [--fraction 0.001] [--min-steps 20] [--device cpu]
                                  [--only ID ...] [--whole] [--budget SECONDS]

``--budget``: start no claim once this many seconds have passed (the rest are listed).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

from _configs import step_counts, with_steps
from _headline import headline
from dltheory.claims import all_claims
from dltheory.claims.runner import build_sweep
from dltheory.engine import Store, execute
from dltheory.errors import UserError


def _timed_sweep(claim, fraction: float | None, device: str, store: Store) -> tuple[float, int]:
    """(wall s, runs) of the claim's full sweep, steps cut to ``fraction`` (None: whole).
    A run that fails (an exception) is an error here: its time would not be the run's; one
    that diverges ran its steps, and counts."""
    sweep = build_sweep(claim, "full")
    if fraction is not None:
        # a zero step count (a control with no training) stays zero
        sweep.configs = [with_steps(c, lambda v: v and max(1, math.ceil(v * fraction)))
                         for c in sweep.configs]
    for config in sweep.configs:
        claim.validate(config)
    t0 = time.perf_counter()
    outcome = execute(claim, sweep, store, backend="local", device=device, resume=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    failed = [r for r in store.runs(outcome.keys) if r["status"] not in ("ok", "diverged")]
    if failed:
        raise UserError(f"{len(failed)} of {len(outcome.keys)} runs {failed[0]['status']}: "
                        f"{str(failed[0]['error'])[:120]}")
    return wall, len(outcome.keys)


def _fmt(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 600 else f"{seconds / 3600:.2f} h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=0.001, help="f: the runs take f and 2f")
    parser.add_argument("--min-steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--whole", action="store_true", help="run claims with no step key whole")
    parser.add_argument("--budget", type=float, default=math.inf)
    args = parser.parse_args()
    if not 0 < args.fraction <= 0.25:
        raise SystemExit(f"--fraction must be in (0, 0.25] (got {args.fraction})")
    print(f"# full profile, estimated per claim from its full sweep with steps × f and × 2f, f = "
          f"{args.fraction:g} or what gives the fewest steps {args.min_steps} (T linear in the "
          f"steps), --device {args.device}, {torch.get_num_threads()} torch threads")
    print(f"{'claim':40s} {'runs':>5s} {'f':>7s} {'T(f)':>8s} {'T(2f)':>8s} {'estimate':>10s}  note")
    estimates, missing, start = {}, [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "r.sqlite") as store:
        for claim_id, claim in all_claims().items():
            if args.only and claim_id not in args.only:
                continue
            if time.perf_counter() - start > args.budget:
                missing.append(claim_id)
                continue
            counts = [v for c in claim.sweep("full").configs for v in step_counts(c)]
            if not counts and not args.whole:
                print(f"{claim_id:40s} {'':5s} {'-':>7s} {'-':>8s} {'-':>8s} {'-':>10s}  no step key: "
                      f"not estimated (--whole runs it)", flush=True)
                missing.append(claim_id)
                continue
            try:
                if not counts:  # nothing to cut: run it whole
                    t, runs = _timed_sweep(claim, None, args.device, store)
                    print(f"{claim_id:40s} {runs:5d} {'-':>7s} {'-':>8s} {'-':>8s} {_fmt(t):>10s}  "
                          f"no step key: measured whole", flush=True)
                    estimates[claim_id] = t
                    continue
                f1 = min(max(args.fraction, args.min_steps / min(counts)), 0.5)
                f2 = 2 * f1
                _timed_sweep(claim, f1, args.device, store)  # warm-up: caches, imports
                t2, _ = _timed_sweep(claim, f2, args.device, store)
                t1, runs = _timed_sweep(claim, f1, args.device, store)
            except UserError as e:  # a cut config the claim refuses: say so, go on
                print(f"{claim_id:40s} {'':5s} {'-':>7s} {'-':>8s} {'-':>8s} {'-':>10s}  not run: {e}",
                      flush=True)
                missing.append(claim_id)
                continue
            slope = (t2 - t1) / (f2 - f1)
            if slope < 0:  # noise larger than the steps' cost: no slope to extrapolate
                estimate, note = t2, "T(2f) < T(f): steps not resolved, the larger time taken"
            else:
                estimate, note = t1 + slope * (1 - f1), f"steps {slope * f1 / t1:.0%} of T(f)"
            estimates[claim_id] = estimate
            print(f"{claim_id:40s} {runs:5d} {f1:7.3g} {t1:7.1f}s {t2:7.1f}s {_fmt(estimate):>10s}  "
                  f"{note}", flush=True)
    total = sum(estimates.values())
    print(f"{'total':40s} {'':5s} {'':7s} {'':8s} {'':8s} {_fmt(total):>10s}  "
          f"{len(estimates)} claims")
    if missing:
        print(f"# not estimated ({len(missing)}): {', '.join(missing)}")
    if estimates:
        largest = sorted(estimates, key=estimates.get, reverse=True)[:3]
        headline(f"full profile, estimated from its sweeps with the steps cut, {len(estimates)} claims, "
                 f"one process, --device {args.device}",
                 _fmt(total), "largest: " + ", ".join(f"{c} {_fmt(estimates[c])}" for c in largest))


if __name__ == "__main__":
    main()
