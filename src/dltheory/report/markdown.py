"""The README's claims table, generated from the registry and a record of quick verdicts.

``make reproduce`` runs every claim in the quick profile, writes the verdicts to
``docs/quick-verdicts.json`` (committed) and rewrites the table between the markers in
README.md. A test regenerates the table and fails when the README is stale.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

from dltheory.claims import all_claims
from dltheory.errors import UserError

START, END = "<!-- claims-table:start -->", "<!-- claims-table:end -->"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _short_source(source: str, limit: int = 90) -> str:
    return source if len(source) <= limit else source[: limit - 1].rstrip() + "…"


def claims_table(verdicts: Mapping[str, Any]) -> str:
    """The Markdown table: id, statement, source, quick-profile verdict (with runs)."""
    lines = ["| id | statement | source | quick verdict |", "|---|---|---|---|"]
    for claim_id, claim in all_claims().items():
        v = verdicts.get(claim_id)
        if v is None:
            verdict = "not run"
        else:
            label = {True: "**pass**", False: "**FAIL**", None: "not run"}[v["passed"]]
            verdict = f"{label} ({v['n_runs']} runs): {v['measured']}"
        lines.append(f"| `{claim_id}` | {_cell(claim.statement)} | {_cell(_short_source(claim.source))} "
                     f"| {_cell(verdict)} |")
    return "\n".join(lines)


def load_verdicts(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    return json.loads(path.read_text())["verdicts"]


def write_verdicts(path: Path, verdicts: Mapping[str, Any], version: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"profile": "quick", "version": version,
                                "verdicts": dict(sorted(verdicts.items()))},
                               indent=1, ensure_ascii=False) + "\n")


def replace_table(readme_text: str, table: str) -> str:
    """``readme_text`` with the table between the markers replaced by ``table``."""
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not pattern.search(readme_text):
        raise UserError(f"the README has no claims-table markers ({START} … {END}); add them")
    return pattern.sub(lambda _: f"{START}\n{table}\n{END}", readme_text)


def table_in(readme_text: str) -> str:
    m = re.search(re.escape(START) + r"\n(.*?)\n" + re.escape(END), readme_text, re.S)
    if not m:
        raise UserError(f"the README has no claims-table markers ({START} … {END}); add them")
    return m.group(1)
