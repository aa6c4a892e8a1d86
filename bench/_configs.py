"""Config helpers shared by the benchmarks."""

from __future__ import annotations

from typing import Any, Callable, Mapping

# The keys that count a claim's optimizer steps (the part of a run's cost that grows with them).
STEP_KEYS = ("steps", "max_steps", "iterations", "gd_steps", "epochs")


def step_counts(config: Mapping[str, Any]) -> list[int]:
    """The positive integer step counts of ``config`` (what :func:`with_steps` cuts)."""
    return [v for k, v in config.items() if k in STEP_KEYS and isinstance(v, int) and v > 0]


def with_steps(config: Mapping[str, Any], cut: Callable[[int], int]) -> dict[str, Any]:
    """``config`` with every integer step count ``v`` replaced by ``cut(v)``."""
    return {k: (cut(v) if k in STEP_KEYS and isinstance(v, int) else v) for k, v in config.items()}
