"""bench/: the headline lines each benchmark prints and the one table bench/all.py makes of them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import _headline
    import all as bench_all

    return _headline, bench_all


def test_a_headline_line_reads_back_and_other_lines_do_not(bench, capsys):
    headline, _ = bench
    headline.headline("speed-up, 16 seeds", "10.2×", "a loop over seeds")
    line = capsys.readouterr().out.strip()
    assert headline.parse(line) == {"measure": "speed-up, 16 seeds", "value": "10.2×",
                                    "note": "a loop over seeds"}
    for other in ("| claim | 10.2× |", "headline: not json", 'headline: {"measure": "no value"}', ""):
        assert headline.parse(other) is None


def test_summary_is_one_table_of_every_benchmark_and_names_the_failed(bench):
    _, bench_all = bench
    rows = [dict(bench="seeds", measure="speed-up", value="9.9×", note="loop"),
            dict(bench="curvature", measure="trace", value="2.1× faster")]
    table = bench_all.summary(rows, ["autodiff.py"]).splitlines()
    assert table[2] == "| benchmark | measure | value | against |"
    assert table[4:] == ["| seeds | speed-up | 9.9× | loop |", "| curvature | trace | 2.1× faster |  |",
                         "| autodiff | (failed: no headline) | - | - |"]


def test_seeds_benchmark_prints_its_headlines(bench):
    """The benchmark itself, on one 3-ms claim: its rows reach the summary."""
    headline, _ = bench
    out = subprocess.run([sys.executable, str(BENCH / "seeds.py"), "--only",
                          "deep-linear-end-to-end-dynamics", "--seeds", "2", "--repeat", "1"],
                         capture_output=True, text=True, check=True).stdout
    rows = [r for r in map(headline.parse, out.splitlines()) if r]
    assert [r["measure"] for r in rows] == [
        "seed batching, 2 seeds, smoke configs: runs/s batched ÷ loop",
        "seed batching: batched metrics equal to each seed alone (bit for bit)"]
    assert rows[1]["value"] == "1 of 1 claims" and rows[1]["note"] == "differ: none"


def test_all_gathers_the_headlines_of_every_benchmark_into_one_table(tmp_path):
    """bench/all.py run on copies of itself beside two stand-in benchmarks, one failing."""
    for name in ("all.py", "_headline.py"):
        (tmp_path / name).write_text((BENCH / name).read_text())
    (tmp_path / "fast.py").write_text(
        "from _headline import headline\nprint('| its own table |')\n"
        "headline('speed-up', '12.0×', 'a loop')\n")
    (tmp_path / "broken.py").write_text("raise SystemExit('no machine')\n")
    proc = subprocess.run([sys.executable, str(tmp_path / "all.py")], capture_output=True, text=True)
    assert proc.returncode != 0 and "benchmarks failed: broken.py" in proc.stderr
    results = (tmp_path / "results.md").read_text()
    assert "| fast | speed-up | 12.0× | a loop |" in results
    assert "| broken | (failed: no headline) | - | - |" in results
    assert "| its own table |" in results and "headline:" not in results
    assert results.index("Headline ratios") < results.index("## fast")
