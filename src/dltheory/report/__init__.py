"""Figures, the HTML report and the README's claims table."""

from dltheory.report.html import build_report
from dltheory.report.markdown import claims_table, load_verdicts, replace_table, write_verdicts

__all__ = ["build_report", "claims_table", "load_verdicts", "replace_table", "write_verdicts"]
