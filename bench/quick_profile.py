"""The whole quick profile: wall time per claim (fresh store), against the 15-minute budget.

    python bench/quick_profile.py [--only ID ...] [--profile quick] [--device cuda]

With ``--device cuda`` a ``cpu_only`` claim still runs on the CPU (as ``dltheory run`` does);
the table says where each ran.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _headline import headline
from dltheory.claims import all_claims
from dltheory.claims.runner import run_claim
from dltheory.engine import Store

BUDGET_S = 15 * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"# {args.profile} profile, one claim after another in a fresh store, --device {args.device}")
    print(f"{'claim':40s} {'wall s':>8s} {'runs':>5s} {'device':>6s}  verdict")
    total, walls, passed = 0.0, {}, 0
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "r.sqlite") as store:
        for claim_id, claim in all_claims().items():
            if args.only and claim_id not in args.only:
                continue
            t0 = time.perf_counter()
            cr = run_claim(claim, store, profile=args.profile, device=args.device)
            wall = time.perf_counter() - t0
            total += wall
            walls[claim_id] = wall
            passed += cr.verdict.passed is True
            why = ""
            if cr.verdict.passed is not True:  # the store is temporary: say why here
                why = "  " + cr.verdict.measured.rpartition("; failed: ")[2][:300]
            print(f"{claim_id:40s} {wall:8.1f} {len(cr.results):5d} {cr.device:>6s}  {cr.verdict.label}{why}",
                  flush=True)
    print(f"{'total':40s} {total:8.1f}        budget {BUDGET_S} s: "
          f"{'within' if total <= BUDGET_S else 'OVER'} ({total / BUDGET_S:.0%})")
    if walls:
        slowest = sorted(walls, key=walls.get, reverse=True)[:3]
        headline(f"{args.profile} profile, {len(walls)} claims one after another in one process"
                 f"{'' if args.device == 'cpu' else ', --device ' + args.device}: "
                 f"wall time ÷ the {BUDGET_S // 60}-min budget",
                 f"{total / BUDGET_S:.2f} ({total:.0f} s)",
                 f"{passed} of {len(walls)} pass; slowest: "
                 + ", ".join(f"{c} {walls[c]:.0f} s" for c in slowest))


if __name__ == "__main__":
    main()
