"""The report opens in a real headless Chromium with every figure decoded, its screenshot is not blank, and at a
1280 px window the recommendation fits the page: no table of its section is wider than the viewport or scrolls
sideways, and the screenshot shows the recommendation table's right edge inside the window."""

import numpy as np
import pytest

from .conftest import load_data

WIDTH = 1280  # a laptop's window


@pytest.mark.browser
def test_report_in_headless_chromium(tmp_path):
    from costlaw.analysis.report import build_report

    browser = load_data("browser")  # the `browser` marker's gate (tests/conftest.py) guarantees Chromium here
    db = load_data("fixtures").build_store(tmp_path)
    res = build_report(db, tmp_path / "report", n_boot=4)
    assert len(res.figures) == 7
    assert browser.figures_loaded(res.html) == len(res.figures)
    levels, variance = browser.screenshot_stats(res.html, tmp_path / "shot.png")
    assert levels > 50 and variance > 100  # text, tables and figures, not a blank page


@pytest.mark.browser
def test_recommendation_fits_1280px(tmp_path):
    from costlaw.analysis.report import build_report

    browser = load_data("browser")
    db = load_data("fixtures").build_store(tmp_path)  # its winners include the long hybrid label
    res = build_report(db, tmp_path / "report", n_boot=4, validate=False)
    lay = browser.layout(res.html, width=WIDTH)
    view = lay["viewport"]
    assert view == WIDTH and lay["page"] <= view  # the page itself never scrolls sideways
    tables = {t["id"]: t for t in lay["tables"] if t["section"] == "recommendation"}
    assert {"recommendation", "recommendation-winners", "candidates"} <= set(tables)
    for name, t in tables.items():
        assert t["right"] <= view, f"{name} ends at {t['right']:.0f} px, past the {view} px window"
        assert t["box_scroll"] <= t["box_client"], f"{name} scrolls sideways in its box"

    # The screenshot at the same width: the table's right border is drawn where the layout says, inside the
    # window, with the page's white beyond it, so what a reader sees is the table whole.
    rec = tables["recommendation"]
    shot = tmp_path / "report-1280.png"
    grey = browser.screenshot(res.html, shot, WIDTH, int(rec["bottom"]) + 40)
    assert shot.is_file() and grey.shape[1] == WIDTH
    rows = grey[int(rec["top"]) + 2:int(rec["bottom"]) - 2]
    edge = int(round(rec["right"])) - 1
    border = min(np.median(rows[:, x]) for x in range(edge - 1, edge + 2))
    assert border < 235, f"no table border at x {edge} in the screenshot (grey {border:.0f})"
    assert np.median(rows[:, edge + 3:edge + 40]) > 250  # page background right of the table
