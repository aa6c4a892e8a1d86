"""Seed batching: runs per second of ``run_batch(config, seeds)`` vs a loop over seeds.

For every claim that declares ``batched = True``, time its smoke config with S seeds as one
batched computation and as S separate runs, in the same process, and check that both give
identical metrics (bit for bit on CPU; wall-clock metrics aside). First it checks whether
``torch.bmm`` of S stacked small products gives each the bits it gets alone on this machine,
and whether :func:`dltheory.models.seed_matmul` (the batched GEMM the claims use) does.
Timings are printed, never asserted. The column ``solver s`` is the time the batched run
spends solving the claims' references, one seed at a time (cvxpy's ``Problem.solve`` and the
conic forms handed to Clarabel directly): the loop's time over it, ``ceiling``, bounds the
speed-up that batching the training can reach.

``--invariance PROFILE`` instead checks bit-identity where the claims' tests do not look: at
the shapes of PROFILE's configs (quick or full; their step counts cut to ``--steps``, the
first ``--configs`` of each sweep), three seeds batched against each run alone, one thread.
Run it on a new CPU: which kernels round differently in a batch depends on the instruction
set (on this AVX-512 host it found ``implicit-bias-homogeneous-margin`` differing at the
quick and full shapes while its smoke-shape test passed).

Each side's time is its best over the run checked for bit-identity and ``--repeat`` rounds
that time batched and looped in turn, a side shorter than 1 s repeated within a round until
it lasts that long: on a shared host
the same code's ratio otherwise moved by up to 1.6× between runs (lazy-training 7.0× to
11.5×, batched 0.2–0.33 s).

    python bench/seeds.py [--seeds 16] [--repeat 2] [--only ID ...]
    python bench/seeds.py --invariance full [--steps 1000] [--configs 6] [--only ID ...]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import torch

from _configs import with_steps
from _headline import headline
from dltheory.claims import all_claims
from dltheory.models import seed_matmul


def _differ(claim, a, b) -> set[str]:
    """The metrics (wall-clock ones aside) whose values two outcomes do not share bit for bit
    (by repr, so that NaN equals NaN)."""
    keys = (a.metrics.keys() | b.metrics.keys()) - set(claim.timings)
    return {k for k in keys if repr(a.metrics.get(k)) != repr(b.metrics.get(k))}


_MIN_TIME = 1.0  # seconds: a timing shorter than this repeats its call until it lasts as long


def _timed(fn):
    """(fn's result, its wall time)."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


class _SolverClock:
    """Seconds spent solving the references while active: in ``cvxpy.Problem.solve`` and in
    :func:`dltheory.reference._solve.solve_conic` (the conic forms handed to Clarabel
    directly), wherever a module imported it; a call inside another timed call counts once."""

    def __init__(self):
        self.seconds = 0.0
        self._depth = 0

    def _timed(self, fn):
        def timed(*args, **kwargs):
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1
                if not self._depth:
                    self.seconds += time.perf_counter() - t0
        return timed

    def __enter__(self):
        import sys

        import cvxpy as cp

        from dltheory.reference import _solve

        self._patched = [(cp.Problem, "solve", cp.Problem.solve)] + [
            (module, "solve_conic", _solve.solve_conic) for module in list(sys.modules.values())
            if getattr(module, "solve_conic", None) is _solve.solve_conic]
        for owner, name, fn in self._patched:
            setattr(owner, name, self._timed(fn))
        return self

    def __exit__(self, *exc):
        for owner, name, fn in self._patched:
            setattr(owner, name, fn)


def _best_interleaved(fns, rounds: int, first: list[float]) -> list[float]:
    """The best time per call of each of ``fns``: ``first`` (the time of a call already
    made, which also sets how often to call) and ``rounds`` rounds, each timing every fn in
    turn (so a slow phase of a shared host hits both sides of a ratio alike), a fn that
    takes less than ``_MIN_TIME`` called as many times as that lasts."""
    calls = [max(1, math.ceil(_MIN_TIME / max(t, 1e-6))) for t in first]
    best = [t if k == 1 else math.inf for t, k in zip(first, calls)]
    for _ in range(rounds):
        for i, (fn, k) in enumerate(zip(fns, calls)):
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            best[i] = min(best[i], (time.perf_counter() - t0) / k)
    return best


# (b, d, k) = (minibatch, input, width) of products like teacher-student's: x·Wᵀ is
# (b × d)(d × k), its weight update Gᵀ·x is (k × b)(b × d)
_GEMM_SHAPES = ((25, 5, 20), (50, 10, 25), (50, 10, 75), (50, 10, 200), (200, 10, 100))


def bmm_batch_invariance(seeds: int = 16, bmm=torch.bmm) -> list[str]:
    """The products for which ``bmm`` of ``seeds`` stacked matrices does not give each
    slice the bits it gets in a ``bmm`` of one (on a fresh copy): where plain ``torch.bmm``
    does not, a claim that must match its unbatched run bit for bit cannot use it."""
    gen = torch.Generator().manual_seed(0)
    differ = []
    for dtype in (torch.float32, torch.float64):
        for b, d, k in _GEMM_SHAPES:
            A = torch.randn(seeds, b, d, generator=gen, dtype=dtype)
            W = torch.randn(seeds, k, d, generator=gen, dtype=dtype)
            G = torch.randn(seeds, b, k, generator=gen, dtype=dtype)
            for name, left, right in (("x·Wᵀ", A, W.mT), ("Gᵀ·x", G.mT, A)):
                together = bmm(left, right)
                alone = [bmm(left[s:s + 1].clone(), right[s:s + 1].clone())[0] for s in range(seeds)]
                if not all(torch.equal(together[s], one) for s, one in enumerate(alone)):
                    differ.append(f"{str(dtype).removeprefix('torch.')} {name} b={b} d={d} k={k}")
    return differ


def invariance(profile: str, steps: int, n_configs: int, only) -> None:
    """Batched vs alone at PROFILE's shapes, steps cut (see the module docstring)."""
    torch.set_num_threads(1)
    print(f"# batched (3 seeds) vs each seed alone at the {profile} profile's shapes, steps ≤ {steps}")
    for claim_id, claim in all_claims().items():
        if not claim.batched or (only and claim_id not in only):
            continue
        for i, config in enumerate(claim.sweep(profile).configs[:n_configs]):
            config = with_steps(config, lambda v: min(v, steps))
            t0 = time.perf_counter()
            try:
                claim.validate(config)
                together = claim.run_batch(config, [0, 1, 2], "cpu")
                differ = sorted(set().union(*(_differ(claim, b, claim.run_batch(config, [s], "cpu")[0])
                                              for s, b in enumerate(together))))
                result = "identical" if not differ else f"DIFFERS: {', '.join(differ[:4])}"
            except Exception as e:  # a cut config may not validate: say so, go on
                result = f"not run: {type(e).__name__}: {str(e)[:90]}"
            print(f"{claim_id:40s} config {i}  {time.perf_counter() - t0:6.1f} s  {result}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--invariance", default=None, metavar="PROFILE")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--configs", type=int, default=6)
    args = parser.parse_args()
    if args.invariance:
        invariance(args.invariance, args.steps, args.configs, args.only)
        return
    seeds = list(range(args.seeds))
    print(f"# seed batching — torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, {args.seeds} seeds, best of {args.repeat} "
          f"interleaved rounds, each timing >= {_MIN_TIME:g} s")
    for name, bmm in (("torch.bmm", torch.bmm), ("seed_matmul", seed_matmul)):
        differ = bmm_batch_invariance(args.seeds, bmm)
        print(f"# {name} of {args.seeds} stacked products vs each alone: "
              + ("bit-identical for every shape tried" if not differ else
                 f"differs for {len(differ)} of {4 * len(_GEMM_SHAPES)} products "
                 f"({'; '.join(differ[:3])}{' …' if len(differ) > 3 else ''})"))
    print(f"{'claim':40s} {'batched runs/s':>15s} {'loop runs/s':>12s} {'speed-up':>9s} "
          f"{'solver s':>8s} {'ceiling':>8s}  identical")
    speedups, ceilings, not_same = {}, {}, []
    for claim_id, claim in all_claims().items():
        if not claim.batched or (args.only and claim_id not in args.only):
            continue
        config = claim.sweep("smoke").configs[0]
        run_batched = lambda c=claim, cfg=config: c.run_batch(cfg, seeds, "cpu")  # noqa: E731
        run_looped = lambda c=claim, cfg=config: [c.run_batch(cfg, [s], "cpu")[0] for s in seeds]  # noqa: E731
        # The runs compared for bit-identity are also each side's first timing.
        (together, t_batched), (alone, t_looped) = _timed(run_batched), _timed(run_looped)
        batched, looped = _best_interleaved([run_batched, run_looped], args.repeat,
                                            [t_batched, t_looped])
        with _SolverClock() as clock:  # a warm run: the first pays cvxpy's imports and caches
            run_batched()
        same = not any(_differ(claim, a, b) for a, b in zip(together, alone))
        ceiling = f"{looped / clock.seconds:7.1f}×" if clock.seconds else "-"
        print(f"{claim_id:40s} {len(seeds) / batched:15.2f} {len(seeds) / looped:12.2f} "
              f"{looped / batched:8.1f}× {clock.seconds:8.2f} {ceiling:>8s}  {'yes' if same else 'NO'}")
        speedups[claim_id] = looped / batched
        if clock.seconds:
            ceilings[claim_id] = looped / clock.seconds
        not_same += [] if same else [claim_id]
    if speedups:
        ranked = sorted(speedups, key=speedups.get)
        below = [c for c in ranked if speedups[c] < 10]
        headline(f"seed batching, {args.seeds} seeds, smoke configs: runs/s batched ÷ loop",
                 f"median {statistics.median(speedups.values()):.1f}× "
                 f"({speedups[ranked[0]]:.1f}–{speedups[ranked[-1]]:.1f}×)",
                 f"target ≥ 10×: met by {len(ranked) - len(below)} of {len(ranked)} claims; below: "
                 + (", ".join(f"{c} {speedups[c]:.1f}×" + (f" (solver ceiling {ceilings[c]:.1f}×)"
                                                          if c in ceilings else "")
                              for c in below) or "none"))
        headline("seed batching: batched metrics equal to each seed alone (bit for bit)",
                 f"{len(ranked) - len(not_same)} of {len(ranked)} claims",
                 "differ: " + (", ".join(not_same) or "none"))


if __name__ == "__main__":
    main()
