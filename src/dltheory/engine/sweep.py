"""Sweeps: a grid of configs × seeds, and the runs it expands to.

A :class:`Run` is the unit the store records: (claim id, config, config hash, seed,
profile). Every run draws its randomness from its own ``torch.Generator`` seeded from
(claim, config hash, seed) — never from a global RNG — so the same inputs give the same
numbers whatever the backend, the worker, or the order in which runs execute.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import torch

PROFILES = ("smoke", "quick", "full")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the form that hashes identically everywhere."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def config_hash(config: Mapping[str, Any]) -> str:
    """A short, stable hash of a config (16 hex digits of SHA-256 of its canonical JSON)."""
    return hashlib.sha256(canonical_json(dict(config)).encode()).hexdigest()[:16]


def run_seed(claim_id: str, chash: str, seed: int) -> int:
    """The 63-bit integer that seeds a run's generator, derived from (claim, config hash, seed)."""
    digest = hashlib.sha256(f"{claim_id}|{chash}|{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def make_generator(claim_id: str, chash: str, seed: int, device: str | torch.device = "cpu"):
    """A fresh ``torch.Generator`` on ``device`` for one run."""
    gen = torch.Generator(device=device)
    gen.manual_seed(run_seed(claim_id, chash, seed))
    return gen


@dataclass(frozen=True)
class Run:
    """One (claim, config, seed, profile): the unit of work and of storage."""

    claim_id: str
    config: Mapping[str, Any]
    seed: int
    profile: str

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)

    def generator(self, device: str | torch.device = "cpu") -> torch.Generator:
        return make_generator(self.claim_id, self.config_hash, self.seed, device)


@dataclass
class Sweep:
    """A list of configs, each run for every seed in ``seeds``.

    ``grid`` builds the Cartesian product of a few axes over a base config, which is how
    most claims describe their sweeps.
    """

    configs: list[dict[str, Any]]
    seeds: Sequence[int]
    profile: str = "quick"
    claim_id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def grid(base: Mapping[str, Any], axes: Mapping[str, Sequence[Any]] | None = None):
        """Configs of ``base`` overridden by every combination of the values in ``axes``."""
        axes = dict(axes or {})
        keys = list(axes)
        return [
            {**base, **dict(zip(keys, values))}
            for values in itertools.product(*(axes[k] for k in keys))
        ]

    def runs(self) -> Iterator[Run]:
        for config in self.configs:
            for seed in self.seeds:
                yield Run(self.claim_id, config, int(seed), self.profile)

    def groups(self) -> Iterator[tuple[dict[str, Any], list[int]]]:
        """(config, seeds) pairs: the unit a batched claim runs as one computation."""
        for config in self.configs:
            yield config, [int(s) for s in self.seeds]

    def __len__(self) -> int:
        return len(self.configs) * len(self.seeds)
