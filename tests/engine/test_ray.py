"""The Ray backend on real clusters: one started in process, one started by `ray start`
and reached by address, with a worker killed midway."""

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time

import pytest

from dltheory.claims.runner import run_claim
from dltheory.engine import Store
from tests.engine._toy_claim import CLAIM

ray = pytest.importorskip("ray") if not os.environ.get("CI") else __import__("ray")


def _metrics(cr):
    return {(r.config["d"], r.seed): (r.status, r.metrics) for r in cr.results}


@pytest.fixture
def no_ray_session():
    ray.shutdown()
    yield
    ray.shutdown()


def test_ray_sweep_on_a_local_cluster_matches_the_local_backend(tmp_path, no_ray_session):
    with Store.open(tmp_path / "ray.sqlite") as a, Store.open(tmp_path / "local.sqlite") as b:
        on_ray = run_claim(CLAIM, a, profile="smoke", backend="ray", workers=2)
        local = run_claim(CLAIM, b, profile="smoke", backend="local")
    assert _metrics(on_ray) == _metrics(local)
    assert on_ray.results.counts()["ok"] == 12


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_killing_a_ray_worker_midway_leaves_no_duplicates_and_the_sweep_completes(
        tmp_path, no_ray_session):
    ray_bin = shutil.which("ray") or os.path.join(os.path.dirname(os.sys.executable), "ray")
    piddir = tmp_path / "pids"
    piddir.mkdir()
    env = {**os.environ, "TOY_SLEEP": "0.3", "TOY_PIDDIR": str(piddir), "RAY_AUTH_MODE": "disabled"}
    port = _free_port()
    start = subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=2",
                            "--include-dashboard=false", "--disable-usage-stats"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stderr
    killed = []

    def kill_first_worker():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for name in os.listdir(piddir):
                os.kill(int(name), signal.SIGKILL)
                killed.append(int(name))
                return
            time.sleep(0.05)

    try:
        os.environ["RAY_AUTH_MODE"] = "disabled"
        killer = threading.Thread(target=kill_first_worker)
        killer.start()
        store_path = tmp_path / "r.sqlite"
        with Store.open(store_path) as store:
            first = run_claim(CLAIM, store, profile="smoke", backend="ray",
                              address=f"127.0.0.1:{port}")
            killer.join()
            assert killed, "no worker was killed"
            rows = sqlite3.connect(store_path).execute(
                "SELECT config_hash, seed, status FROM runs").fetchall()
            assert len(rows) == len({(h, s) for h, s, _ in rows}) == 12
            # Ray retried the killed task; anything still failed is rerun on resume
            again = run_claim(CLAIM, store, profile="smoke", backend="ray",
                              address=f"127.0.0.1:{port}")
            assert again.results.counts() == {"ok": 12, "diverged": 0, "failed": 0}
            assert again.skipped == first.results.counts()["ok"]
    finally:
        os.environ.pop("RAY_AUTH_MODE", None)
        ray.shutdown()
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_ray_backend_without_ray_names_the_extra(monkeypatch, tmp_path):
    import builtins

    from dltheory.errors import ConfigError

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("no ray")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with Store.open(tmp_path / "r.sqlite") as store:
        with pytest.raises(ConfigError, match=r"pip install 'dltheory\[ray\]'"):
            run_claim(CLAIM, store, profile="smoke", backend="ray")
