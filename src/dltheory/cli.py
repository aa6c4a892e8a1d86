"""``dltheory``: list, show, run and reproduce claims; build the report.

Mistakes of the user print one line, ``error: ...``, on stderr and exit with status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer
from typer.exceptions import TyperException

from dltheory.claims import all_claims, get_claim
from dltheory.claims.runner import ClaimRun, last_results, run_claim
from dltheory.engine import Store, check_backend, check_device, code_version
from dltheory.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="The foundations of deep-learning theory, runnable.")

StoreOpt = typer.Option(None, "--store", help="Results store (default $DLTHEORY_STORE or "
                                              "./dltheory-results/results.sqlite).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON document instead of text.")
ProfileOpt = typer.Option("quick", help="smoke | quick | full")
BackendOpt = typer.Option("local", help="local | process | ray")
WorkersOpt = typer.Option(None, help="Worker processes (process backend) or CPUs of a local "
                                     "Ray cluster.")
AddressOpt = typer.Option(None, help="Ray cluster address HOST:PORT (ray backend).")
DeviceOpt = typer.Option("cpu", help="cpu | cuda | cuda:N")
FreshOpt = typer.Option(False, "--fresh", help="Re-run runs already in the store.")


def _echo(text: str = "") -> None:
    typer.echo(text)


def _progress(total_label: str, enabled: bool):
    """A rich progress bar over runs (only on a TTY and not in --json mode)."""
    if not enabled or not sys.stdout.isatty():
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), transient=True)


def _run_one(claim_id: str, store: Store, show_progress: bool, **kwargs: Any) -> ClaimRun:
    claim = get_claim(claim_id)
    progress = _progress(claim_id, show_progress)
    if progress is None:
        return run_claim(claim, store, **kwargs)
    with progress:
        task = progress.add_task(claim_id, total=None)
        return run_claim(
            claim, store, **kwargs,
            on_start=lambda n: progress.update(task, total=n),
            on_rows=lambda rows: progress.advance(task, len(rows)),
        )


def _verdict_line(cr: ClaimRun) -> str:
    v = cr.verdict
    counts = ", ".join(f"{k} {n}" for k, n in cr.results.counts().items() if n)
    text = (f"{v.label.upper():8s} {cr.claim.id} [{cr.profile}] — {v.n_runs} ok runs "
            f"({counts}; {cr.skipped} reused from the store; {cr.wall_s:.1f} s)\n"
            f"  measured: {v.measured}")
    if cr.figure:
        text += f"\n  figure:   {cr.figure}"
    if cr.device == "cpu" and cr.claim.cpu_only and cr.requested_device != "cpu":
        text += f"\n  device:   ran on the CPU, not {cr.requested_device}: {cr.claim.cpu_only}"
    failed = [r for r in cr.results if r.status == "failed"]
    if failed:
        last = (failed[0].error or "").strip().splitlines()[-1:]
        text += f"\n  {len(failed)} run(s) failed; first error: {last[0] if last else '?'}"
    return text


@app.command("list")
def list_claims(store_path: Optional[Path] = StoreOpt, as_json: bool = JsonOpt) -> None:
    """Claims with their last verdict."""
    rows = []
    store = Store.open(store_path) if _store_exists(store_path) else None
    for claim_id, claim in all_claims().items():
        found = last_results(claim, store) if store else None
        verdict = found[2] if found else None
        rows.append({"id": claim_id, "title": claim.title,
                     "profile": found[0]["profile"] if found else None,
                     "verdict": verdict.to_dict() if verdict else None})
    if as_json:
        _echo(json.dumps(rows, indent=1, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("claim", "title", "last verdict")
    for r in rows:
        v = r["verdict"]
        label = "not run" if v is None else {True: "[green]pass[/]", False: "[red]FAIL[/]",
                                             None: "not run"}[v["passed"]]
        if v is not None:
            label += f" ({r['profile']}, {v['n_runs']} runs)"
        table.add_row(r["id"], r["title"], label)
    Console().print(table)


def _store_exists(store_path: Optional[Path]) -> bool:
    from dltheory.engine import resolve_store_path

    return resolve_store_path(store_path).exists()


@app.command("show")
def show(claim_id: str = typer.Argument(..., metavar="ID"), store_path: Optional[Path] = StoreOpt,
         as_json: bool = JsonOpt) -> None:
    """Statement, source, criterion and last results of one claim."""
    claim = get_claim(claim_id)
    found = last_results(claim, Store.open(store_path)) if _store_exists(store_path) else None
    doc = {"id": claim.id, "title": claim.title, "statement": claim.statement,
           "source": claim.source, "criterion": claim.criterion,
           "last": None if not found else {
               "profile": found[0]["profile"], "version": found[0]["version"],
               "finished_at": found[0]["finished_at"], "counts": found[0]["counts"],
               "verdict": found[2].to_dict(), "figure": found[0]["figure"]}}
    if as_json:
        _echo(json.dumps(doc, indent=1, ensure_ascii=False))
        return
    _echo(f"{claim.id}: {claim.title}\n\nStatement: {claim.statement}\nSource:    {claim.source}"
          f"\nCriterion: {claim.criterion}\n")
    if found is None:
        _echo("Last results: never run (dltheory run " + claim.id + ")")
    else:
        last = doc["last"]
        _echo(f"Last results ({last['profile']} profile, {last['finished_at']}, code "
              f"{last['version']}): {found[2].label}\n  measured: {found[2].measured}\n"
              f"  runs: {last['counts']}\n  figure: {last['figure']}")


@app.command("run")
def run(
    claim_id: str = typer.Argument(..., metavar="ID"),
    profile: str = ProfileOpt,
    seeds: Optional[int] = typer.Option(None, help="Number of seeds (overrides the profile's)."),
    set_: List[str] = typer.Option([], "--set", help="Override a config value: key=value."),
    backend: str = BackendOpt,
    workers: Optional[int] = WorkersOpt,
    address: Optional[str] = AddressOpt,
    device: str = DeviceOpt,
    store_path: Optional[Path] = StoreOpt,
    fresh: bool = FreshOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Run one claim's sweep, judge it and draw its figure."""
    check_backend(backend)
    check_device(device)
    claim = get_claim(claim_id)
    store = Store.open(store_path)
    cr = _run_one(claim.id, store, not as_json, profile=profile, seeds=seeds, overrides=set_,
                  backend=backend, workers=workers, device=device, resume=not fresh,
                  address=address)
    _echo(json.dumps(cr.to_dict(), indent=1, ensure_ascii=False) if as_json else _verdict_line(cr))


@app.command("reproduce")
def reproduce(
    profile: str = ProfileOpt,
    only: List[str] = typer.Option([], "--only", help="Only these claim ids (repeatable)."),
    backend: str = BackendOpt,
    workers: Optional[int] = WorkersOpt,
    address: Optional[str] = AddressOpt,
    device: str = DeviceOpt,
    store_path: Optional[Path] = StoreOpt,
    out: Optional[Path] = typer.Option(None, help="Report folder (default: beside the store)."),
    readme: Optional[Path] = typer.Option(
        None, help="Also record the verdicts (docs/quick-verdicts.json) and rewrite this "
                   "README's claims table (quick profile only)."),
    fresh: bool = FreshOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Run every claim (or --only some), then write the HTML report."""
    from dltheory.report import build_report

    check_backend(backend)
    check_device(device)
    claim_ids = [get_claim(c).id for c in only] if only else list(all_claims())
    store = Store.open(store_path)
    done = []
    for claim_id in claim_ids:
        cr = _run_one(claim_id, store, not as_json, profile=profile, backend=backend,
                      workers=workers, device=device, resume=not fresh, address=address)
        done.append(cr)
        if not as_json:
            _echo(_verdict_line(cr))
    page = build_report(store, out or store.path.parent / "report", profile)
    if readme is not None:
        _update_readme(readme, store, profile)
    if as_json:
        _echo(json.dumps({"claims": [cr.to_dict() for cr in done], "report": str(page)},
                         indent=1, ensure_ascii=False))
    else:
        passed = sum(cr.verdict.passed is True for cr in done)
        _echo(f"\n{passed}/{len(done)} claims pass. Report: {page}")


def _update_readme(readme: Path, store: Store, profile: str) -> None:
    from dltheory.report import claims_table, load_verdicts, replace_table, write_verdicts

    if profile != "quick":
        raise UserError("--readme records quick-profile verdicts; run with --profile quick")
    if not readme.exists():
        raise UserError(f"--readme {readme}: no such file")
    record = readme.parent / "docs" / "quick-verdicts.json"
    verdicts = load_verdicts(record)
    for claim_id, claim in all_claims().items():
        found = last_results(claim, store, "quick")
        if found:
            verdicts[claim_id] = found[2].to_dict() | {"version": found[0]["version"]}
            verdicts[claim_id].pop("details", None)
    write_verdicts(record, verdicts, code_version())
    readme.write_text(replace_table(readme.read_text(), claims_table(verdicts)))


@app.command("report")
def report(
    out: Optional[Path] = typer.Option(None, help="Report folder (default: beside the store)."),
    profile: Optional[str] = typer.Option(None, help="Only sweeps of this profile."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the README's claims table "
                                                            "(from docs/quick-verdicts.json)."),
    readme: Optional[Path] = typer.Option(None, help="Rewrite this README's claims table from "
                                                     "docs/quick-verdicts.json (no run)."),
    store_path: Optional[Path] = StoreOpt,
) -> None:
    """Build the HTML report from the store (nothing is re-run)."""
    from dltheory.claims.runner import check_profile
    from dltheory.report import build_report, claims_table, load_verdicts, replace_table

    if markdown or readme:
        record = (readme.parent if readme else Path(".")) / "docs" / "quick-verdicts.json"
        table = claims_table(load_verdicts(record))
        if readme:
            if not readme.exists():
                raise UserError(f"--readme {readme}: no such file")
            readme.write_text(replace_table(readme.read_text(), table))
        else:
            _echo(table)
        return
    if profile is not None:
        check_profile(profile)
    store = Store.open(store_path, create=False)
    page = build_report(store, out or store.path.parent / "report", profile)
    _echo(f"Report: {page}")


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point: one ``error:`` line and exit 2 for every mistake of the user."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="dltheory", standalone_mode=False)
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except TyperException as e:  # usage errors: unknown option, missing argument, ...
        typer.echo(f"error: {' '.join(e.format_message().split())}", err=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("error: interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
