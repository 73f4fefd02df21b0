"""The report opens in a real headless Chromium with every figure decoded, and its screenshot is not blank."""


import pytest

from .conftest import load_data


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
