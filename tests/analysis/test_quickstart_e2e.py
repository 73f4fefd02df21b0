"""The README's main command, end to end on CPU: sweep -> ingest -> fit -> recommend -> report, then resumed.

Its 13 short CPU runs cannot identify any law, so the quickstart names no winner and says so plainly; the
recommender's pick from those laws is shown only when asked for (--allow-weak-laws), flagged."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import load_data

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path):
    out = tmp_path / "qs"
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "costlaw", "quickstart", "--root", str(out)], capture_output=True,
                       text=True, cwd=ROOT, timeout=1800)
    seconds = time.monotonic() - t0
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    text = p.stdout
    for step in range(1, 7):
        assert f"step {step}/6" in text
    assert "sweep quickstart: 13 completed" in text
    assert "  [13/13] " in text  # the in-process sweep's own lines join the log when no terminal shows a bar
    assert "== context 131072: no winner: every candidate within the budgets is excluded: a weak law" in text
    assert "THE QUICKSTART'S DATA CANNOT SUPPORT A RECOMMENDATION" in text
    assert "no recommendation: this quickstart's data cannot support one" in text
    assert "next:" in text and "costlaw recommend --db" in text and "costlaw validate --db" in text
    for label in ("4,4", "4,1", "1,1"):
        assert f"  {label}: weak law (" in text
    print(f"quickstart took {seconds:.0f} s")

    from costlaw.analysis.store import query_df

    db = out / "results.duckdb"
    runs = query_df(db, "SELECT count(*) AS n FROM run_summary", engine="pandas")
    assert int(runs["n"][0]) == 13
    fits = query_df(db, "SELECT law, group_keys, params FROM fits", engine="pandas")
    assert len(fits) >= 2 and set(fits["law"]) == {"gqa-size"}

    html = (out / "report" / "index.html").read_text()
    n_img = len(re.findall(r'<img src="data:image/png;base64,', html))
    assert n_img >= 6 and "Recommendation" in html and "Not allowed to win" in html and "Validation" in html
    assert not (out / "report" / "recommended").exists()  # no winner, no TOML
    target = re.search(r"--target-loss (\S+) --context 8K,128K --allow-weak-laws", text).group(1)
    c = subprocess.run([sys.executable, "-m", "costlaw", "recommend", "--db", str(db), "--target-loss", target,
                        "--context", "8K,128K", "--allow-weak-laws", "--allow-outside-envelope", "--json"],
                       capture_output=True, text=True, cwd=ROOT)
    assert c.returncode == 0, c.stderr
    asked = json.loads(c.stdout)
    assert all(ctx["winner"] and ctx["weak_law"] for ctx in asked["by_context"])
    assert any("won only because --allow-weak-laws was given" in w for w in asked["warnings"])

    # run again: the quickstart resumes, training nothing and ingesting nothing new
    again = subprocess.run([sys.executable, "-m", "costlaw", "quickstart", "--root", str(out)], capture_output=True,
                           text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "skipping 13 finished runs" in again.stdout and "unchanged 13" in again.stdout
    assert "started " not in again.stdout and "next:" in again.stdout

    browser = load_data("browser")
    if browser.chromium() is not None:  # the quickstart's own report in a real browser (also test_report_browser)
        assert browser.figures_loaded(out / "report" / "index.html") == n_img
