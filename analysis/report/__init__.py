"""The report of a results file: `build_report(db, out)` writes out/index.html (self-contained: figures as
data URIs), out/report.md (figures as PNG + SVG under out/figures/), out/fits.json and the winners' TOML."""

from costlaw.analysis.report.build import PAPER_CONTEXTS, ReportResult, build_report, default_target

__all__ = ["PAPER_CONTEXTS", "ReportResult", "build_report", "default_target"]
