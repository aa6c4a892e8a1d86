"""Run every benchmark in bench/ in one process tree and write bench/results.md.

Each benchmark prints its own table (times and ratios measured side by side in one run);
this collects them, with the machine's description, into bench/results.md (ignored by git).

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

HERE = Path(__file__).resolve().parent


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", nargs="*", default=[])
    args = parser.parse_args()
    scripts = sorted(p for p in HERE.glob("*.py") if p.name != "all.py" and p.stem not in args.skip)
    sections = [f"# dltheory benchmarks\n\n{time.strftime('%Y-%m-%d %H:%M')} — {_machine()}\n"]
    failed = []
    for script in scripts:
        print(f"\n== {script.name}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
        print(proc.stdout, end="")
        if proc.returncode != 0:
            failed.append(script.name)
            print(proc.stderr[-3000:], file=sys.stderr)
        sections.append(f"## {script.stem} ({time.perf_counter() - t0:.0f} s)\n\n```\n"
                        f"{proc.stdout.strip()}\n```\n")
    (HERE / "results.md").write_text("\n".join(sections))
    print(f"\nwrote {HERE / 'results.md'}")
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
