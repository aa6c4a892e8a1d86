"""The README stays true: its Python examples run, and its claims table is current."""

import re
from pathlib import Path

from dltheory.claims import all_claims
from dltheory.report.markdown import claims_table, load_verdicts, table_in

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_readme_claims_table_is_generated_and_current():
    verdicts = load_verdicts(ROOT / "docs" / "quick-verdicts.json")
    assert table_in(README) == claims_table(verdicts), (
        "README's claims table is stale: run `make reproduce` (or `dltheory reproduce "
        "--profile quick --readme README.md`)")
    assert set(verdicts) <= set(all_claims()), "a recorded verdict names no registered claim"


def test_readme_names_the_two_commands():
    assert "make reproduce" in README and "make test" in README
