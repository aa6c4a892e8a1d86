"""The CLI: bad input gives one ``error:`` line and exit 2, and nothing is written."""

import json
import sqlite3

import pytest
import torch

from dltheory.cli import main


def _cli(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def _assert_user_error(capsys, args, needle):
    code, out, err = _cli(capsys, *args)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def store(tmp_path):
    return str(tmp_path / "results.sqlite")


def _rows(path):
    try:
        return sqlite3.connect(path).execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_unknown_claim_suggests_the_closest_ids(capsys, store):
    line = _assert_user_error(capsys, ["run", "implicit-bias-gd-l3", "--store", store],
                              "unknown claim")
    assert "implicit-bias-gd-l2" in line


@pytest.mark.parametrize("args, needle", [
    (["--set", "nope=1"], "unknown key 'nope'; valid keys: checkpoints, d, lr_scale, margin, n, steps"),
    (["--set", "steps=many"], "expected an integer"),
    (["--set", "margin=abc"], "expected a number"),
    (["--set", "steps"], "expected key=value"),
    (["--set", "lr_scale=3"], "lr_scale must be in (0, 2)"),
    (["--profile", "huge"], "unknown profile 'huge'"),
    (["--backend", "mpi"], "unknown backend 'mpi'"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--seeds", "x"], "Invalid value for '--seeds'"),
    (["--bogus"], "No such option"),
])
def test_bad_run_options_are_one_line_errors_and_write_no_rows(capsys, store, args, needle):
    _assert_user_error(capsys, ["run", "implicit-bias-gd-l2", "--profile", "smoke",
                                "--store", store, *args], needle)
    assert _rows(store) == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_a_user_error(capsys, store):
    _assert_user_error(capsys, ["run", "implicit-bias-gd-l2", "--device", "cuda", "--store", store],
                       "no CUDA GPU")


def test_unwritable_and_corrupt_stores_are_user_errors(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _assert_user_error(capsys, ["run", "implicit-bias-gd-l2", "--profile", "smoke", "--store",
                                str(blocker / "r.sqlite")], "cannot create the store's folder")
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"\x00garbage" * 100)
    before = corrupt.read_bytes()
    for cmd in (["run", "implicit-bias-gd-l2", "--profile", "smoke"], ["report"], ["list"]):
        _assert_user_error(capsys, [*cmd, "--store", str(corrupt)], "not a dltheory results store")
    assert corrupt.read_bytes() == before


def test_smoke_run_prints_a_passing_verdict_as_json_and_list_show_report_read_it(capsys, store, tmp_path):
    code, out, _ = _cli(capsys, "run", "implicit-bias-gd-l2", "--profile", "smoke", "--json",
                        "--store", store)
    assert code == 0
    doc = json.loads(out)
    assert doc["claim"] == "implicit-bias-gd-l2" and doc["profile"] == "smoke"
    assert doc["verdict"]["passed"] is True and doc["verdict"]["n_runs"] == 3
    assert doc["counts"] == {"ok": 3, "diverged": 0, "failed": 0}
    assert doc["figure"].endswith(".png")

    code, out, _ = _cli(capsys, "list", "--json", "--store", store)
    listed = {r["id"]: r for r in json.loads(out)}
    assert listed["implicit-bias-gd-l2"]["verdict"]["passed"] is True

    code, out, _ = _cli(capsys, "show", "implicit-bias-gd-l2", "--json", "--store", store)
    assert json.loads(out)["last"]["counts"]["ok"] == 3

    # rerunning reuses the stored runs
    code, out, _ = _cli(capsys, "run", "implicit-bias-gd-l2", "--profile", "smoke", "--json",
                        "--store", store)
    assert json.loads(out)["skipped_finished"] == 3

    code, out, _ = _cli(capsys, "report", "--out", str(tmp_path / "rep"), "--store", store)
    assert code == 0 and (tmp_path / "rep" / "index.html").exists()
    assert (tmp_path / "rep" / "implicit-bias-gd-l2.png").stat().st_size > 1000
