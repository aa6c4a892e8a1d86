"""Executing a sweep: backends that run groups of seeds, and the driver that stores them.

The driver alone writes to the store, one transaction per finished run, so a worker (or
the driver) dying loses only the runs in flight; resuming skips every run already ``ok``.

Backends
--------
``local``   in this process, one group after another.
``process`` a pool of worker processes (spawn start method: no state leaks from the
            parent, the same code path as a cluster node).
``ray``     Ray tasks on a local or existing cluster (optional extra ``dltheory[ray]``).

A *group* is (config, seeds): a claim that says ``batched = True`` runs it as one
computation (``run_batch``); otherwise each seed is its own task.
"""

from __future__ import annotations

import importlib
import math
import multiprocessing
import os
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from dltheory.engine.store import RunKey, RunRow, Store, code_version, host, now
from dltheory.engine.sweep import Sweep, config_hash
from dltheory.errors import ConfigError, DeviceError

BACKENDS = ("local", "process", "ray")


@dataclass
class SweepOutcome:
    """What executing a sweep produced: the keys of all its runs and what happened."""

    sweep_id: int
    keys: list[RunKey]
    skipped: int
    wall_s: float
    device: str = "cpu"  # where the runs ran: "cpu" for a cpu_only claim whatever was asked


def check_device(device: str) -> str:
    """Validate ``device`` ('cpu', 'cuda', 'cuda:N') against what this machine has."""
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device}: no CUDA GPU is available here; use --device cpu")
        if ":" in device:
            index = device.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise DeviceError(f"--device {device}: this machine has "
                                  f"{torch.cuda.device_count()} GPU(s)")
        return device
    raise DeviceError(f"unknown device {device!r}; use cpu, cuda or cuda:N")


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "ray":
        from dltheory.engine.ray_backend import check_ray

        check_ray()
    return backend


def _status(outcome: Any) -> str:
    if getattr(outcome, "diverged", False):
        return "diverged"
    for value in outcome.metrics.values():
        if isinstance(value, float) and not math.isfinite(value):
            return "diverged"
    return "ok"


def run_group(claim: Any, config: Mapping[str, Any], seeds: Sequence[int], profile: str,
              device: str, version: str) -> list[RunRow]:
    """Run ``seeds`` of ``config`` (batched if the claim is) and return one row per seed.

    An exception becomes a ``failed`` row carrying its traceback; it never escapes.
    """
    chash = config_hash(config)

    def row(seed: int, status: str, outcome: Any, error: str | None, started: str,
            wall: float) -> RunRow:
        return RunRow(
            claim=claim.id, config=dict(config), config_hash=chash, seed=int(seed),
            profile=profile, version=version, status=status,
            metrics=dict(outcome.metrics) if outcome else {},
            curves=dict(outcome.curves) if outcome else {},
            error=error, started_at=started, finished_at=now(), wall_s=wall, host=host(),
            device=device,
        )

    def attempt(fn: Callable[[], list], seeds_: Sequence[int]) -> list[RunRow]:
        started, t0 = now(), time.perf_counter()
        try:
            outcomes = fn()
            if len(outcomes) != len(seeds_):
                raise RuntimeError(f"{claim.id}: run_batch returned {len(outcomes)} outcomes "
                                   f"for {len(seeds_)} seeds")
        except Exception:
            wall = (time.perf_counter() - t0) / len(seeds_)
            return [row(s, "failed", None, traceback.format_exc(), started, wall) for s in seeds_]
        wall = (time.perf_counter() - t0) / len(seeds_)
        return [row(s, _status(o), o, None, started, wall) for s, o in zip(seeds_, outcomes)]

    if getattr(claim, "batched", False):
        return attempt(lambda: claim.run_batch(config, list(seeds), device), seeds)
    rows: list[RunRow] = []
    for seed in seeds:
        rows += attempt(lambda s=seed: [claim.run(config, s, device)], [seed])
    return rows


def _load_claim(module: str) -> Any:
    return importlib.import_module(module).CLAIM


def limit_threads(threads: int) -> None:
    """Hold this process to ``threads`` threads: torch's intra-op pool and the BLAS pools.

    numpy and scipy each bundle an OpenBLAS that starts a thread per core regardless of
    torch's setting; with worker processes sharing the cores and the tiny matrices of many
    claims, those threads spin against each other (regularized-ce-max-margin: 81 s with two
    workers on two cores, 10 s with this limit).
    """
    import numpy  # noqa: F401 — load both BLAS libraries so that the limit reaches them
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)


def _worker_init(threads: int) -> None:
    limit_threads(threads)


def _worker_run(module: str, config: Mapping[str, Any], seeds: Sequence[int], profile: str,
                device: str, version: str) -> list[RunRow]:
    return run_group(_load_claim(module), config, seeds, profile, device, version)


def _tasks(claim: Any, sweep: Sweep, pending: set[RunKey], version: str, parts: int = 1):
    """(config, seeds) tasks covering the pending runs.

    A batched claim's pending seeds of one config form one task, split into ``parts``
    chunks so a pool's workers share them: the claim contract requires ``run_batch`` to give
    each seed the numbers it gets alone, so chunking changes no result. An unbatched claim
    gets one task per seed.
    """
    for config, seeds in sweep.groups():
        chash = config_hash(config)
        todo = [s for s in seeds
                if RunKey(claim.id, chash, s, sweep.profile, version) in pending]
        if not todo:
            continue
        if getattr(claim, "batched", False):
            size = -(-len(todo) // max(1, parts))
            for i in range(0, len(todo), size):
                yield config, todo[i:i + size]
        else:
            for s in todo:
                yield config, [s]


def execute(claim: Any, sweep: Sweep, store: Store, *, backend: str = "local",
            workers: int | None = None, device: str = "cpu", resume: bool = True,
            on_rows: Callable[[list[RunRow]], None] | None = None,
            address: str | None = None) -> SweepOutcome:
    """Run every pending run of ``sweep`` on ``backend`` and store each as it finishes."""
    check_backend(backend)
    check_device(device)
    if getattr(claim, "cpu_only", ""):
        device = "cpu"  # stored as run, and no GPU asked of Ray
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    version = code_version()
    keys = [RunKey(claim.id, config_hash(r.config), r.seed, sweep.profile, version)
            for r in sweep.runs()]
    done = store.finished_ok(keys) if resume else set()
    pending = set(keys) - done
    sweep_id = store.begin_sweep(claim.id, sweep.profile, version, keys)
    # Spread a batched claim's seeds over the pool when there are fewer configs than workers.
    n_workers = workers or (os.cpu_count() or 1)
    parts = 1 if backend == "local" else max(1, n_workers // max(1, len(sweep.configs)))
    tasks = list(_tasks(claim, sweep, pending, version, parts))
    t0 = time.perf_counter()

    def record(rows: list[RunRow]) -> None:
        for r in rows:
            store.write_run(r)
        if on_rows:
            on_rows(rows)

    if backend == "local" or not tasks:
        for config, seeds in tasks:
            record(run_group(claim, config, seeds, sweep.profile, device, version))
    elif backend == "process":
        _run_process_pool(claim, sweep, tasks, device, version, workers, record)
    else:
        from dltheory.engine.ray_backend import run_ray

        run_ray(claim, sweep, tasks, device, version, workers, record, address)

    return SweepOutcome(sweep_id, keys, len(done), wall_s=time.perf_counter() - t0, device=device)


def _run_process_pool(claim: Any, sweep: Sweep, tasks: list, device: str, version: str,
                      workers: int | None, record: Callable[[list[RunRow]], None]) -> None:
    workers = workers or max(1, min(len(tasks), os.cpu_count() or 1))
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")
    module = type(claim).__module__
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(_worker_run, module, config, seeds, sweep.profile, device,
                               version): (config, seeds) for config, seeds in tasks}
        try:
            while futures:
                finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                for fut in finished:
                    config, seeds = futures.pop(fut)
                    try:
                        rows = fut.result()
                    except Exception:  # the worker process itself died
                        err = traceback.format_exc()
                        rows = [RunRow(claim.id, dict(config), config_hash(config), s,
                                       sweep.profile, version, "failed", {}, {}, err, now(), now(),
                                       0.0, host(), device) for s in seeds]
                    record(rows)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
