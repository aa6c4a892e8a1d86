"""Run every benchmark in bench/ in one process tree and write bench/results.md.

Each benchmark prints its own table (times and ratios measured side by side in one run);
this collects them, with the machine's description, into bench/results.md (ignored by git),
and prints the headline ratios of every benchmark (``bench/_headline.py``) as one table at the
end, which also heads results.md.

    python bench/all.py [--skip NAME ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from _headline import parse

HERE = Path(__file__).resolve().parent
# Run on their own, not by make bench: full_estimate.py runs every claim's full sweep twice
# with its steps cut (tens of minutes to hours on this CPU).
NOT_IN_ALL = ("full_estimate",)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), GPU: {gpu}, Python {platform.python_version()}")


def summary(rows: list[dict], failed: list[str]) -> str:
    """The headline rows of every benchmark of the run as one markdown table."""
    out = ["## Headline ratios (all measured side by side within this run)", "",
           "| benchmark | measure | value | against |", "|---|---|---|---|"]
    out += [f"| {r['bench']} | {r['measure']} | {r['value']} | {r.get('note', '')} |" for r in rows]
    out += [f"| {name.removesuffix('.py')} | (failed: no headline) | - | - |" for name in failed]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", nargs="*", default=[])
    args = parser.parse_args()
    scripts = sorted(p for p in HERE.glob("*.py")
                     if p.name != "all.py" and not p.stem.startswith("_")
                     and p.stem not in args.skip + list(NOT_IN_ALL))
    header = f"# dltheory benchmarks\n\n{time.strftime('%Y-%m-%d %H:%M')} — {_machine()}\n"
    sections, rows, failed = [], [], []
    for script in scripts:
        print(f"\n== {script.name}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
        lines = proc.stdout.splitlines()
        found = [(line, parse(line)) for line in lines]
        rows += [dict(row, bench=script.stem) for _, row in found if row is not None]
        text = "\n".join(line for line, row in found if row is None)
        print(text)
        if proc.returncode != 0:
            failed.append(script.name)
            print(proc.stderr[-3000:], file=sys.stderr)
        sections.append(f"## {script.stem} ({time.perf_counter() - t0:.0f} s)\n\n```\n"
                        f"{text.strip()}\n```\n")
    table = summary(rows, failed)
    print("\n" + table)
    (HERE / "results.md").write_text("\n".join([header, table, *sections]))
    print(f"\nwrote {HERE / 'results.md'}")
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
