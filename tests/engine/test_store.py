import sqlite3

import pytest

from dltheory.engine import RunKey, RunRow, Store
from dltheory.errors import StoreError


def _row(seed=0, status="ok", metrics=None, version="v1"):
    return RunRow("claim", {"a": 1}, "h", seed, "smoke", version, status,
                  metrics if metrics is not None else {"x": 1.5}, {"c": [1.0, float("nan")]},
                  None, "t0", "t1", 0.1, "host", "cpu")


def test_store_is_sqlite_in_wal_mode_and_roundtrips_a_row(tmp_path):
    path = tmp_path / "sub" / "results.sqlite"
    with Store.open(path) as store:
        store.write_run(_row())
        rows = store.runs([RunKey("claim", "h", 0, "smoke", "v1")])
    assert rows[0]["metrics"] == {"x": 1.5}
    assert rows[0]["curves"] == {"c": [1.0, None]}  # NaN stored as null, never pickled
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_run_is_stored_once_and_ok_is_never_overwritten_by_a_failure(tmp_path):
    with Store.open(tmp_path / "r.sqlite") as store:
        store.write_run(_row(status="failed", metrics={}))
        store.write_run(_row(status="ok", metrics={"x": 2.0}))
        store.write_run(_row(status="failed", metrics={}))
        assert store.count_runs() == 1
        key = RunKey("claim", "h", 0, "smoke", "v1")
        assert store.finished_ok([key]) == {key}
        assert store.runs([key])[0]["metrics"] == {"x": 2.0}
        # another code version is another run
        store.write_run(_row(version="v2"))
        assert store.count_runs() == 2


def test_a_file_that_is_not_sqlite_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"my precious notes\n")
    with pytest.raises(StoreError, match="not a dltheory results store"):
        Store.open(path)
    assert path.read_bytes() == b"my precious notes\n"


def test_a_store_under_a_regular_file_gives_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create the store's folder"):
        Store.open(blocker / "results.sqlite")


def test_opening_a_missing_store_read_only_says_what_to_do(tmp_path):
    with pytest.raises(StoreError, match="run a claim first"):
        Store.open(tmp_path / "none.sqlite", create=False)
