"""The static HTML report, built from the store alone (nothing is re-run).

One verdict table (claim, statement, measured vs expected, runs, status) and, per claim,
its source, criterion and figure. Every string from the store or a claim is escaped.
"""

from __future__ import annotations

import html
from pathlib import Path

from dltheory.claims import all_claims
from dltheory.claims.runner import last_results, save_figure
from dltheory.engine import Store

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; }
table { border-collapse: collapse; width: 100%; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.4em 0.6em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
.pass { color: #0a6b2d; font-weight: bold; } .fail { color: #b00020; font-weight: bold; }
.notrun { color: #777; }
section { margin-top: 2.5em; border-top: 1px solid #ddd; }
img { max-width: 100%; height: auto; }
code { background: #f5f5f5; padding: 0 0.2em; }
"""


def _status(verdict) -> tuple[str, str]:
    if verdict is None or verdict.passed is None:
        return "not run", "notrun"
    return ("pass", "pass") if verdict.passed else ("FAIL", "fail")


def build_report(store: Store, out_dir: Path, profile: str | None = None) -> Path:
    """Write ``out_dir/index.html`` (and one PNG per claim); return the page's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    e = html.escape
    rows, sections = [], []
    for claim_id, claim in all_claims().items():
        found = last_results(claim, store, profile)
        verdict = found[2] if found else None
        label, css = _status(verdict)
        record = found[0] if found else None
        runs = verdict.n_runs if verdict else 0
        counts = record["counts"] if record else {}
        where = f"{record['profile']} profile, code {record['version']}" if record else "never run"
        measured = verdict.measured if verdict else "—"
        rows.append(
            f"<tr><td><a href=\"#{e(claim_id)}\"><code>{e(claim_id)}</code></a></td>"
            f"<td>{e(claim.statement)}</td><td>{e(measured)}</td><td>{e(claim.criterion)}</td>"
            f"<td>{runs}</td><td class=\"{css}\">{e(label)}</td></tr>"
        )
        figure_html = "<p>No figure: the claim has not run.</p>"
        if found:
            path = save_figure(claim, found[1], out_dir / f"{claim_id}.png")
            if path is not None:
                figure_html = (f"<img src=\"{e(path.name)}\" alt=\"{e(claim.title)}: figure of the "
                               f"{e(record['profile'])} sweep\">")
        count_text = ", ".join(f"{k}: {v}" for k, v in counts.items()) or "—"
        sections.append(
            f"<section id=\"{e(claim_id)}\"><h2>{e(claim.title)}</h2>"
            f"<p><b>Claim</b> <code>{e(claim_id)}</code> — <span class=\"{css}\">{e(label)}</span> "
            f"({e(where)}; runs {e(count_text)})</p>"
            f"<p><b>Statement.</b> {e(claim.statement)}</p>"
            f"<p><b>Source.</b> {e(claim.source)}</p>"
            f"<p><b>Criterion.</b> {e(claim.criterion)}</p>"
            f"<p><b>Measured.</b> {e(measured)}</p>{figure_html}</section>"
        )
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<title>dltheory report</title>"
        f"<style>{_CSS}</style></head><body><h1>dltheory: claims and verdicts</h1>"
        f"<p>Store: <code>{e(str(store.path))}</code></p>"
        "<table id=\"verdicts\"><thead><tr><th>claim</th><th>statement</th><th>measured</th>"
        "<th>expected</th><th>runs</th><th>verdict</th></tr></thead><tbody>"
        + "".join(rows) + "</tbody></table>" + "".join(sections) + "</body></html>\n"
    )
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
