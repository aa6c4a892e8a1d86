"""The claim contract: a theorem (or published experiment) as a sweep that can fail.

A claim module defines one :class:`Claim` subclass and an instance named ``CLAIM``. It
reads top to bottom like a methods section: the setup (``sweep``), the run (``run`` or
``run_batch``), the test (``judge``) and the figure (``figure``). Where the theorem has an
assumption that can be dropped, the claim also runs the negative control and ``judge``
requires the control to behave differently.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import torch

from dltheory.engine.sweep import Sweep, config_hash, make_generator
from dltheory.errors import ConfigError

STATUSES = ("ok", "diverged", "failed")


@dataclass
class Outcome:
    """What one run returns: scalar ``metrics`` and named ``curves`` (lists of numbers).

    Set ``diverged=True`` when the run hit a NaN/inf loss; the engine also marks a run
    diverged when any float metric is not finite.
    """

    metrics: dict[str, Any]
    curves: dict[str, list[float]] = field(default_factory=dict)
    diverged: bool = False


@dataclass(frozen=True)
class Result:
    """One stored run as ``judge`` and ``figure`` see it."""

    config: Mapping[str, Any]
    seed: int
    status: str
    metrics: Mapping[str, Any]
    curves: Mapping[str, Sequence[float | None]]
    error: str | None = None
    wall_s: float | None = None


class Results(list):
    """The runs of one sweep. ``ok`` is what verdicts rest on."""

    @property
    def ok(self) -> "Results":
        return Results(r for r in self if r.status == "ok")

    def counts(self) -> dict[str, int]:
        c = Counter(r.status for r in self)
        return {s: c.get(s, 0) for s in STATUSES}

    def where(self, **match: Any) -> "Results":
        """Runs whose config has every ``key=value`` in ``match``."""
        return Results(r for r in self if all(r.config.get(k) == v for k, v in match.items()))

    def by_config(self) -> dict[str, "Results"]:
        groups: dict[str, Results] = defaultdict(Results)
        for r in self:
            groups[config_hash(r.config)].append(r)
        return dict(groups)


@dataclass
class Verdict:
    """The outcome of ``judge``: did the numbers show what the theorem says?

    ``passed`` is ``None`` when no run finished ok (nothing to judge).
    """

    passed: bool | None
    measured: str
    expected: str
    n_runs: int
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return {True: "pass", False: "FAIL", None: "not run"}[self.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "measured": self.measured,
            "expected": self.expected,
            "n_runs": self.n_runs,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Verdict":
        return cls(d["passed"], d["measured"], d["expected"], d["n_runs"], d.get("details", {}))

    @classmethod
    def nothing_to_judge(cls, expected: str) -> "Verdict":
        return cls(None, "no run finished ok", expected, 0)


class Claim:
    """Base class of every claim. Subclasses set the class attributes and the methods.

    Attributes
    ----------
    id : kebab-case slug, the CLI's handle.
    title, source, statement : what the claim is and where it comes from (full citation).
    criterion : what the numbers must show, in words; ``judge`` is the same in code.
    batched : whether ``run_batch`` computes all seeds of a config as one computation.
        A batched claim must give every seed exactly the numbers it gets alone
        (``run_batch(c, seeds)[i] == run_batch(c, [seeds[i]])[0]``, bit for bit on CPU): the
        engine may split seeds across workers, and resuming may rerun only some of them.
        Multiply stacked matrices with :func:`dltheory.models.seed_matmul` (or a broadcast
        multiply and a sum over the last axis), not plain ``torch.bmm``/``matmul``/``einsum``,
        whose CPU kernels round by batch size and alignment.
    timings : names of metrics that are wall-clock measurements: never equal twice, so left
        out wherever runs are compared number for number.
    cpu_only : why the claim runs on the CPU whatever ``--device`` asks ("" for a claim that
        runs on the device it is given). The engine then runs and stores it as ``cpu`` and
        asks Ray for no GPU; the CLI says so.
    """

    id: str = ""
    title: str = ""
    source: str = ""
    statement: str = ""
    criterion: str = ""
    batched: bool = False
    timings: frozenset[str] = frozenset()
    cpu_only: str = ""

    # -- setup ---------------------------------------------------------------------
    def sweep(self, profile: str) -> Sweep:
        raise NotImplementedError

    def validate(self, config: Mapping[str, Any]) -> None:
        """Raise :class:`ConfigError` when a config cannot be run (checked before a sweep)."""

    # -- run -----------------------------------------------------------------------
    def generator(self, config: Mapping[str, Any], seed: int, device: str = "cpu"):
        """The run's own generator, seeded from (claim, config hash, seed)."""
        return make_generator(self.id, config_hash(config), seed, device)

    def run(self, config: Mapping[str, Any], seed: int, device: str) -> Outcome:
        outcomes = self.run_batch(config, [seed], device)
        return outcomes[0]

    def run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        """All ``seeds`` of ``config`` at once; returns one :class:`Outcome` per seed."""
        return [self.run(config, seed, device) for seed in seeds]

    # -- judge and draw ------------------------------------------------------------
    def judge(self, results: Results) -> Verdict:
        raise NotImplementedError

    def figure(self, results: Results):
        """A matplotlib Figure of the sweep (or ``None``)."""
        return None


def config_keys(sweep: Sweep) -> dict[str, Any]:
    """Every config key of a sweep with an example value (its type is the key's type)."""
    keys: dict[str, Any] = {}
    for cfg in sweep.configs:
        for k, v in cfg.items():
            keys.setdefault(k, v)
    return keys


def parse_value(key: str, text: str, example: Any) -> Any:
    """Parse ``text`` as the type of ``example`` (the config's default for ``key``)."""
    def bad(kind: str) -> ConfigError:
        return ConfigError(f"--set {key}={text!r}: expected {kind} (like the default {example!r})")

    if isinstance(example, bool):
        low = text.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise bad("a boolean (true/false)")
    if isinstance(example, int):
        try:
            return int(text)
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                raise bad("an integer") from None
            if as_float.is_integer():
                return int(as_float)
            raise bad("an integer") from None
    if isinstance(example, float):
        try:
            value = float(text)
        except ValueError:
            raise bad("a number") from None
        if not math.isfinite(value):
            raise bad("a finite number")
        return value
    if isinstance(example, (list, tuple)):
        items = [t for t in text.split(",") if t.strip()]
        if not items:
            raise bad("a comma-separated list")
        inner = example[0] if example else ""
        return [parse_value(key, t.strip(), inner) for t in items]
    return text


def apply_overrides(sweep: Sweep, overrides: Iterable[str]) -> Sweep:
    """Apply ``key=value`` overrides (typed by the sweep's defaults) to every config.

    Configs that become identical are merged, so overriding a swept axis runs it once.
    """
    overrides = list(overrides)
    if not overrides:
        return sweep
    keys = config_keys(sweep)
    parsed: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        if key not in keys:
            valid = ", ".join(sorted(keys))
            raise ConfigError(f"--set: unknown key {key!r}; valid keys: {valid}")
        parsed[key] = parse_value(key, text, keys[key])
    seen: set[str] = set()
    configs = []
    for cfg in sweep.configs:
        new = {**cfg, **{k: v for k, v in parsed.items() if k in cfg}}
        h = config_hash(new)
        if h not in seen:
            seen.add(h)
            configs.append(new)
    return Sweep(configs, sweep.seeds, sweep.profile, sweep.claim_id, dict(sweep.meta))


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def to_float(t: Any) -> float:
    """A Python float from a 0-d tensor or number."""
    if isinstance(t, torch.Tensor):
        return float(t.detach().cpu())
    return float(t)
