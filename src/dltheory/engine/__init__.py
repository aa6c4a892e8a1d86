"""Sweeps, their execution on a backend, and the SQLite results store."""

from dltheory.engine.execute import BACKENDS, SweepOutcome, check_backend, check_device, execute, run_group
from dltheory.engine.store import DEFAULT_STORE, RunKey, RunRow, Store, code_version, resolve_store_path
from dltheory.engine.sweep import PROFILES, Run, Sweep, config_hash, make_generator, run_seed

__all__ = [
    "BACKENDS", "DEFAULT_STORE", "PROFILES", "Run", "RunKey", "RunRow", "Store", "Sweep",
    "SweepOutcome", "check_backend", "check_device", "code_version", "config_hash", "execute",
    "make_generator", "resolve_store_path", "run_group", "run_seed",
]
