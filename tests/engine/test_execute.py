import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dltheory.claims.runner import run_claim
from dltheory.engine import Store
from tests.engine._toy_claim import CLAIM

SCRIPT = Path(__file__).with_name("_sweep_script.py")


def _metrics(cr):
    return {(r.config["d"], r.seed): (r.status, r.metrics) for r in cr.results}


def test_failed_and_diverged_runs_are_recorded_and_the_sweep_goes_on(tmp_path):
    with Store.open(tmp_path / "r.sqlite") as store:
        cr = run_claim(CLAIM, store, profile="smoke", overrides=["fail_seed=1", "nan_seed=2"])
    assert cr.results.counts() == {"ok": 8, "diverged": 2, "failed": 2}
    failed = [r for r in cr.results if r.status == "failed"]
    assert all("planned failure" in r.error for r in failed)
    assert cr.verdict.n_runs == 8 and cr.verdict.passed is True


def test_local_and_process_backends_give_bit_identical_metrics(tmp_path):
    with Store.open(tmp_path / "a.sqlite") as a, Store.open(tmp_path / "b.sqlite") as b:
        local = run_claim(CLAIM, a, profile="smoke", backend="local")
        pooled = run_claim(CLAIM, b, profile="smoke", backend="process", workers=2)
    assert _metrics(local) == _metrics(pooled)
    assert len(_metrics(local)) == 12


def test_resume_skips_finished_runs_and_fresh_reruns_them(tmp_path):
    with Store.open(tmp_path / "r.sqlite") as store:
        first = run_claim(CLAIM, store, profile="smoke", overrides=["fail_seed=3"])
        second = run_claim(CLAIM, store, profile="smoke", overrides=["fail_seed=3"])
        assert first.skipped == 0 and second.skipped == 10  # the 2 failed runs are retried
        fresh = run_claim(CLAIM, store, profile="smoke", overrides=["fail_seed=3"], resume=False)
        assert fresh.skipped == 0
        assert _metrics(first) == _metrics(second) == _metrics(fresh)
        assert store.count_runs() == 12


def _rows(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT config_hash, seed, status FROM runs").fetchall()
    finally:
        conn.close()


def _rows_so_far(path):
    """The rows of a store another process is writing: none while it has created the file
    but not yet its schema (polling in that window had failed CI once with 'no such table')."""
    try:
        return _rows(path) if path.exists() else []
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return []
        raise


def test_a_sweep_killed_midway_resumes_without_duplicates_or_half_rows(tmp_path):
    store = tmp_path / "r.sqlite"
    env = {**os.environ, "TOY_SLEEP": "0.25", "TOY_SEEDS": "20"}  # 40 runs
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(store), "process", "2"], env=env,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(_rows_so_far(store)) >= 6:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, no clean-up
    proc.wait()
    before = _rows(store)
    assert 6 <= len(before) < 40, "the kill should land midway"
    done = subprocess.run([sys.executable, str(SCRIPT), str(store), "process", "2"],
                          env={**env, "TOY_SLEEP": "0"}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    after = _rows(store)
    keys = [(h, s) for h, s, _ in after]
    assert len(keys) == len(set(keys)) == 40
    assert all(status == "ok" for _, _, status in after)
    assert set(before) <= set(after)
    assert done.stdout.split()[-1] == str(len(before))  # exactly the finished runs were reused


def test_two_sweeps_writing_one_store_at_once(tmp_path):
    store = tmp_path / "r.sqlite"
    Store.open(store).close()
    env = {**os.environ, "TOY_SLEEP": "0.02", "TOY_SEEDS": "15"}
    procs = [subprocess.Popen([sys.executable, str(SCRIPT), str(store), "local", "1"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    rows = _rows(store)
    assert len(rows) == len({(h, s) for h, s, _ in rows}) == 30


@pytest.mark.parametrize("backend", ["local", "process"])
def test_unknown_backend_and_bad_workers_are_user_errors(tmp_path, backend):
    from dltheory.errors import ConfigError

    with Store.open(tmp_path / "r.sqlite") as store:
        with pytest.raises(ConfigError, match="unknown backend"):
            run_claim(CLAIM, store, profile="smoke", backend="mpi")
        with pytest.raises(ConfigError, match="--workers"):
            run_claim(CLAIM, store, profile="smoke", backend=backend, workers=0)


def test_a_batched_claims_seeds_split_over_workers_give_the_local_numbers(tmp_path):
    from dltheory.claims import get_claim

    claim = get_claim("implicit-bias-gd-l2")
    overrides = ["steps=2000"]
    with Store.open(tmp_path / "a.sqlite") as a, Store.open(tmp_path / "b.sqlite") as b:
        local = run_claim(claim, a, profile="smoke", seeds=4, overrides=overrides)
        pooled = run_claim(claim, b, profile="smoke", seeds=4, overrides=overrides,
                           backend="process", workers=2)
    assert {r.seed: r.metrics for r in local.results} == {r.seed: r.metrics for r in pooled.results}


def test_a_cpu_only_claim_asked_for_cuda_runs_and_is_stored_as_cpu(tmp_path, monkeypatch):
    # a machine with a GPU, as far as the device check knows; the claim must never see "cuda"
    import importlib

    from dltheory.cli import _verdict_line
    from tests.engine._toy_claim import ToyClaim

    execute_module = importlib.import_module("dltheory.engine.execute")

    class CpuToy(ToyClaim):
        cpu_only = "tiny problems, launch-bound on a GPU"

        def run(self, config, seed, device):
            assert device == "cpu", device
            return super().run(config, seed, device)

    monkeypatch.setattr(execute_module, "check_device", lambda device: device)
    with Store.open(tmp_path / "r.sqlite") as store:
        cr = run_claim(CpuToy(), store, profile="smoke", device="cuda")
    stored = {d for (d,) in sqlite3.connect(tmp_path / "r.sqlite").execute("SELECT device FROM runs")}
    assert cr.results.counts()["ok"] == 12 and stored == {"cpu"}
    assert (cr.device, cr.requested_device, cr.to_dict()["device"]) == ("cpu", "cuda", "cpu")
    assert "ran on the CPU, not cuda: tiny problems, launch-bound on a GPU" in _verdict_line(cr)
