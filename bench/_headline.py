"""The headline ratios of a benchmark, which ``bench/all.py`` gathers into one table.

A benchmark prints its own tables; for each number that sums it up it also calls
:func:`headline`, which prints one marked line (JSON after :data:`MARK`). ``bench/all.py``
takes those lines out of the benchmark's section and prints them, from every benchmark of
the run, as one table at the end (and at the top of ``bench/results.md``).
"""

from __future__ import annotations

import json

MARK = "headline: "


def headline(measure: str, value: str, note: str = "") -> None:
    """One row of the summary table: what was measured, its value (a ratio where the
    benchmark compares), and what it is compared with or against."""
    print(MARK + json.dumps({"measure": measure, "value": value, "note": note}, ensure_ascii=False),
          flush=True)


def parse(line: str) -> dict | None:
    """The row a :func:`headline` line holds, or None for any other line."""
    if not line.startswith(MARK):
        return None
    try:
        row = json.loads(line[len(MARK):])
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) and {"measure", "value"} <= row.keys() else None
