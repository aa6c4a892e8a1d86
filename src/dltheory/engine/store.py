"""The results store: one SQLite file (stdlib ``sqlite3``, WAL mode).

A row per run — claim, config JSON and hash, seed, profile, code version, status, metrics,
curves, error text, timestamps, wall time, host — written in one transaction when the run
finishes, so a killed sweep loses only the runs in flight. A unique key on (claim, config
hash, seed, profile, code version) means a run is stored at most once however many sweeps
write it, and ``--resume`` skips what is already ``ok``. A row per sweep records which runs
a verdict rests on, the verdict itself and where its figure is.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from dltheory import __version__
from dltheory.engine.sweep import canonical_json
from dltheory.errors import StoreError

DEFAULT_STORE = Path("dltheory-results") / "results.sqlite"
SCHEMA_VERSION = 1
_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY,
    claim       TEXT NOT NULL,
    config      TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    seed        INTEGER NOT NULL,
    profile     TEXT NOT NULL,
    version     TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('ok', 'diverged', 'failed')),
    metrics     TEXT NOT NULL,
    curves      TEXT NOT NULL,
    error       TEXT,
    started_at  TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    wall_s      REAL NOT NULL,
    host        TEXT NOT NULL,
    device      TEXT NOT NULL,
    UNIQUE (claim, config_hash, seed, profile, version)
);
CREATE TABLE IF NOT EXISTS sweeps (
    id          INTEGER PRIMARY KEY,
    claim       TEXT NOT NULL,
    profile     TEXT NOT NULL,
    version     TEXT NOT NULL,
    keys        TEXT NOT NULL,
    verdict     TEXT,
    counts      TEXT,
    figure      TEXT,
    started_at  TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS sweeps_by_claim ON sweeps (claim, profile, id);
"""


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version, plus the git commit (and ``-dirty``) when run from a checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True,
            text=True, timeout=5,
        )
        if sha.returncode != 0:
            return __version__
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
            capture_output=True, text=True, timeout=5,
        )
        suffix = "-dirty" if dirty.stdout.strip() else ""
        return f"{__version__}+g{sha.stdout.strip()}{suffix}"
    except (OSError, subprocess.SubprocessError):
        return __version__


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _jsonable(obj: Any) -> Any:
    """Numbers and containers with NaN/inf turned into ``None`` (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return _jsonable(obj.tolist())
    return obj


def dumps(obj: Any) -> str:
    return canonical_json(_jsonable(obj))


@dataclass(frozen=True)
class RunKey:
    claim: str
    config_hash: str
    seed: int
    profile: str
    version: str


@dataclass
class RunRow:
    """A finished run as the engine hands it to the store."""

    claim: str
    config: Mapping[str, Any]
    config_hash: str
    seed: int
    profile: str
    version: str
    status: str
    metrics: Mapping[str, Any]
    curves: Mapping[str, Any]
    error: str | None
    started_at: str
    finished_at: str
    wall_s: float
    host: str
    device: str

    @property
    def key(self) -> RunKey:
        return RunKey(self.claim, self.config_hash, self.seed, self.profile, self.version)


def resolve_store_path(path: str | os.PathLike | None) -> Path:
    """``path``, else ``$DLTHEORY_STORE``, else ``./dltheory-results/results.sqlite``."""
    if path:
        return Path(path)
    env = os.environ.get("DLTHEORY_STORE")
    return Path(env) if env else DEFAULT_STORE


class Store:
    """The SQLite results store. Open with :meth:`open`; every write is one transaction."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self._conn = conn

    # -- opening -------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike | None = None, *, create: bool = True) -> "Store":
        path = resolve_store_path(path)
        if path.exists():
            if path.is_dir():
                raise StoreError(f"store {path} is a directory; give a file path "
                                 f"(e.g. {path}/results.sqlite)")
            _check_is_sqlite(path)
        elif not create:
            raise StoreError(f"no results store at {path}; run a claim first (dltheory run ID)")
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the store's folder {path.parent}: {e.strerror}; "
                                 "pass a writable --store PATH") from None
            if not os.access(path.parent, os.W_OK):
                raise StoreError(f"store folder {path.parent} is not writable; pass a writable --store PATH")
        try:
            conn = sqlite3.connect(path, timeout=60.0, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 60000")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"store {path}: cannot switch SQLite to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StoreError(f"store {path} has schema version {version}, this dltheory "
                                 f"reads {SCHEMA_VERSION}; use another --store PATH")
            with _transaction(conn):
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"store {path} is not a usable SQLite database ({e}); "
                             "pass another --store PATH") from None
        except OSError as e:
            raise StoreError(f"cannot open store {path}: {e}; pass a writable --store PATH") from None
        return cls(path, conn)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- runs ----------------------------------------------------------------------
    def write_run(self, row: RunRow) -> None:
        """Insert (or replace a non-ok earlier attempt of) one run, in one transaction."""
        values = (
            row.claim, dumps(row.config), row.config_hash, row.seed, row.profile, row.version,
            row.status, dumps(row.metrics), dumps(row.curves), row.error, row.started_at,
            row.finished_at, row.wall_s, row.host, row.device,
        )
        try:
            with _transaction(self._conn):
                self._conn.execute(
                    """INSERT INTO runs (claim, config, config_hash, seed, profile, version,
                           status, metrics, curves, error, started_at, finished_at, wall_s, host, device)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                       ON CONFLICT (claim, config_hash, seed, profile, version) DO UPDATE SET
                           config = excluded.config, status = excluded.status,
                           metrics = excluded.metrics, curves = excluded.curves,
                           error = excluded.error, started_at = excluded.started_at,
                           finished_at = excluded.finished_at, wall_s = excluded.wall_s,
                           host = excluded.host, device = excluded.device
                       WHERE runs.status != 'ok' OR excluded.status = 'ok'""",
                    values,
                )
        except sqlite3.OperationalError as e:
            raise StoreError(f"cannot write to store {self.path}: {e}") from None

    def finished_ok(self, keys: Iterable[RunKey]) -> set[RunKey]:
        """The subset of ``keys`` already stored with status ``ok``."""
        keys = list(keys)
        if not keys:
            return set()
        found: set[RunKey] = set()
        by_claim: dict[tuple[str, str, str], list[RunKey]] = {}
        for k in keys:
            by_claim.setdefault((k.claim, k.profile, k.version), []).append(k)
        for (claim, profile, version), ks in by_claim.items():
            rows = self._conn.execute(
                "SELECT config_hash, seed FROM runs WHERE claim = ? AND profile = ? AND "
                "version = ? AND status = 'ok'", (claim, profile, version),
            ).fetchall()
            have = set(rows)
            found.update(k for k in ks if (k.config_hash, k.seed) in have)
        return found

    def runs(self, keys: Sequence[RunKey]) -> list[dict[str, Any]]:
        """The stored rows for ``keys`` (missing keys are skipped), in the order given."""
        out = []
        for k in keys:
            row = self._conn.execute(
                "SELECT config, seed, status, metrics, curves, error, wall_s FROM runs WHERE "
                "claim = ? AND config_hash = ? AND seed = ? AND profile = ? AND version = ?",
                (k.claim, k.config_hash, k.seed, k.profile, k.version),
            ).fetchone()
            if row:
                out.append(_row_dict(row))
        return out

    def all_runs(self, claim: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT config, seed, status, metrics, curves, error, wall_s FROM runs"
        args: tuple = ()
        if claim:
            sql += " WHERE claim = ?"
            args = (claim,)
        return [_row_dict(r) for r in self._conn.execute(sql + " ORDER BY id", args)]

    def count_runs(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    # -- sweeps --------------------------------------------------------------------
    def begin_sweep(self, claim: str, profile: str, version: str, keys: Sequence[RunKey]) -> int:
        payload = dumps([[k.config_hash, k.seed] for k in keys])
        with _transaction(self._conn):
            cur = self._conn.execute(
                "INSERT INTO sweeps (claim, profile, version, keys, started_at) VALUES (?, ?, ?, ?, ?)",
                (claim, profile, version, payload, now()),
            )
        return int(cur.lastrowid)

    def finish_sweep(self, sweep_id: int, verdict: Mapping[str, Any], counts: Mapping[str, int],
                     figure: str | None) -> None:
        with _transaction(self._conn):
            self._conn.execute(
                "UPDATE sweeps SET verdict = ?, counts = ?, figure = ?, finished_at = ? WHERE id = ?",
                (dumps(verdict), dumps(counts), figure, now(), sweep_id),
            )

    def last_sweep(self, claim: str, profile: str | None = None) -> dict[str, Any] | None:
        """The newest finished sweep of ``claim`` (in ``profile`` if given)."""
        sql = "SELECT id, profile, version, keys, verdict, counts, figure, finished_at FROM sweeps " \
              "WHERE claim = ? AND finished_at IS NOT NULL"
        args: list[Any] = [claim]
        if profile:
            sql += " AND profile = ?"
            args.append(profile)
        row = self._conn.execute(sql + " ORDER BY id DESC LIMIT 1", args).fetchone()
        if row is None:
            return None
        sid, prof, version, keys, verdict, counts, figure, finished = row
        run_keys = [RunKey(claim, h, s, prof, version) for h, s in json.loads(keys)]
        return {
            "id": sid, "claim": claim, "profile": prof, "version": version, "keys": run_keys,
            "verdict": json.loads(verdict) if verdict else None,
            "counts": json.loads(counts) if counts else {}, "figure": figure, "finished_at": finished,
        }


def _row_dict(row: tuple) -> dict[str, Any]:
    config, seed, status, metrics, curves, error, wall_s = row
    return {
        "config": json.loads(config), "seed": seed, "status": status,
        "metrics": json.loads(metrics), "curves": json.loads(curves), "error": error,
        "wall_s": wall_s,
    }


def _check_is_sqlite(path: Path) -> None:
    """Refuse (without touching it) a file that is not an SQLite database."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as e:
        raise StoreError(f"cannot read store {path}: {e.strerror}; pass a readable --store PATH") from None
    if head and head != _SQLITE_MAGIC:
        raise StoreError(f"{path} is not a dltheory results store (not an SQLite file); "
                         "it was left untouched: pass another --store PATH")


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


def host() -> str:
    return socket.gethostname()
