"""Seed batching: runs per second of ``run_batch(config, seeds)`` vs a loop over seeds.

For every claim that declares ``batched = True``, time its smoke config with S seeds as one
batched computation and as S separate runs, in the same process, and check that both give
identical metrics (bit for bit on CPU; wall-clock metrics aside). Timings are printed, never
asserted.

    python bench/seeds.py [--seeds 16] [--repeat 3] [--only ID ...]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from dltheory.claims import all_claims


def _timeless(claim, metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in claim.timings}


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    print(f"# seed batching — torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, {args.seeds} seeds, best of {args.repeat}")
    print(f"{'claim':40s} {'batched runs/s':>15s} {'loop runs/s':>12s} {'speed-up':>9s}  identical")
    for claim_id, claim in all_claims().items():
        if not claim.batched or (args.only and claim_id not in args.only):
            continue
        config = claim.sweep("smoke").configs[0]
        batched = _best(lambda c=claim, cfg=config: c.run_batch(cfg, seeds, "cpu"), args.repeat)
        looped = _best(lambda c=claim, cfg=config: [c.run_batch(cfg, [s], "cpu") for s in seeds],
                       args.repeat)
        together = claim.run_batch(config, seeds, "cpu")
        alone = [claim.run_batch(config, [s], "cpu")[0] for s in seeds]
        same = all(_timeless(claim, a.metrics) == _timeless(claim, b.metrics)
                   for a, b in zip(together, alone))
        print(f"{claim_id:40s} {len(seeds) / batched:15.2f} {len(seeds) / looped:12.2f} "
              f"{looped / batched:8.1f}×  {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
