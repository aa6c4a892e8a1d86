"""The Ray backend: runs as Ray tasks on a local or existing cluster (``dltheory[ray]``).

Each (config, seeds) group is one task asking for one CPU (and one GPU with
``--device cuda``). Results come back to the driver, which alone writes the store, one
transaction per run: a worker that dies loses only its task in flight, which Ray retries
(``max_retries``); whatever still fails is recorded as ``failed`` and ``--resume`` reruns it.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Callable, Mapping, Sequence

from dltheory.engine.store import RunRow, host, now
from dltheory.engine.sweep import Sweep, config_hash
from dltheory.errors import ConfigError

MAX_RETRIES = 3


def _ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'dltheory[ray]'") from None
    return ray


def check_ray() -> None:
    _ray()


def _connect(address: str | None, workers: int | None) -> None:
    ray = _ray()
    if ray.is_initialized():
        return
    # Workers import the claim's module by name: give them the driver's import path (on a
    # local cluster that is enough; on a remote one, install dltheory on every node).
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}
    try:
        if address:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        else:
            ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False,
                     runtime_env=runtime_env, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"at {address}" if address else "locally"
        raise ConfigError(f"cannot start or reach a Ray cluster {where}: "
                          f"{' '.join(str(e).split())[:200]}") from None


def _task(module: str, config: Mapping[str, Any], seeds: Sequence[int], profile: str, device: str,
          version: str) -> list[RunRow]:
    """One group of seeds on a Ray worker, held to the one CPU the task asked for."""
    from dltheory.engine.execute import _worker_run, limit_threads

    limit_threads(1)
    return _worker_run(module, config, seeds, profile, device, version)


def run_ray(claim: Any, sweep: Sweep, tasks: Sequence[tuple[Mapping[str, Any], list[int]]],
            device: str, version: str, workers: int | None,
            record: Callable[[list[RunRow]], None], address: str | None) -> None:
    """Submit every task to Ray and record each group's rows as it comes back."""
    ray = _ray()
    _connect(address, workers)
    gpus = 1 if device.startswith("cuda") else 0
    remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=MAX_RETRIES)(_task)
    module = type(claim).__module__
    pending = {remote.remote(module, dict(config), list(seeds), sweep.profile, device, version):
               (config, seeds) for config, seeds in tasks}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                config, seeds = pending.pop(ref)
                try:
                    rows = ray.get(ref)
                except Exception:  # the task failed after its retries (worker or node lost)
                    err = traceback.format_exc()
                    rows = [RunRow(claim.id, dict(config), config_hash(config), s, sweep.profile,
                                   version, "failed", {}, {}, err, now(), now(), 0.0, host(),
                                   device) for s in seeds]
                record(rows)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
