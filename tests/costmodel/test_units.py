"""costmodel/core/units.py: SI and binary prefixes past peta without `1.15e+03 P`, token counts that refuse what is
not a count, and tables that fit a width (issue 22's output)."""

import pytest

from costlaw.costmodel.core.errors import ConfigError
from costlaw.costmodel.core.units import MAX_TOKENS, binary_bytes, parse_tokens, si, table, table_width


@pytest.mark.parametrize("x, text", [
    (None, "-"), (0, "0"), (0.5, "0.5"), (999, "999"), (999.7, "1 k"), (1234567, "1.23 M"), (1.15e15, "1.15 P"),
    (1.15e18, "1.15 E"), (9.996e17, "1 E"), (4.1e19, "41 E"), (3e21, "3 Z"), (2e24, "2 Y"), (7e27, "7 R"),
    (1e30, "1 Q"), (1.2e33, "1.2e+33"), (-2e6, "-2 M"), (float("inf"), "inf"),
])
def test_si(x, text):
    assert si(x) == text


def test_no_mantissa_of_a_thousand_or_more_under_any_prefix():
    for e in range(3, 30):  # up to 1000 Q; past it, scientific notation without a prefix
        for m in (0.9996, 1, 1.15, 9.9996, 99.96, 999.6):
            text = si(m * 10**e)
            assert "e+" not in text and float(text.split()[0]) < 1000, text


@pytest.mark.parametrize("n, text", [
    (None, "-"), (512, "512 B"), (1024, "1 KiB"), (1023.9 * 1024, "1 MiB"), (1.5 * 2**30, "1.5 GiB"),
    (2**50, "1 PiB"), (3 * 2**60, "3 EiB"), (2**80, "1 YiB"),
])
def test_binary_bytes(n, text):
    assert binary_bytes(n) == text


@pytest.mark.parametrize("text, value", [("8192", 8192), ("128K", 131072), ("1m", 2**20), (" 0.5K ", 512),
                                         (4096, 4096), (str(MAX_TOKENS), MAX_TOKENS)])
def test_token_counts(text, value):
    assert parse_tokens(text) == value


@pytest.mark.parametrize("text, problem", [
    ("inf", "not a finite token count"), ("nan", "not a finite token count"), ("1e400", "not a finite token count"),
    ("-inf", "not a finite token count"), ("1.5", "not a whole number"), ("0", "must be >= 1"), ("-8K", ">= 1"),
    ("", "is not a token count"), ("lots", "is not a token count"), (str(MAX_TOKENS + 1), "is beyond"),
    ("9" * 400, "a 400-digit number of tokens is beyond"), (True, "whole number of tokens"), (2.0, "whole number"),
])
def test_token_counts_refused(text, problem):
    with pytest.raises(ConfigError, match="--context: ") as e:
        parse_tokens(text, "--context")
    assert problem in str(e.value) and "\n" not in str(e.value)


ROWS = [{"id": i, "name": "x" * 50, "loss": 1.5 + i, "gpu": None, "note": "yy"} for i in range(3)]


def test_a_table_wider_than_its_width_is_cut_and_says_so():
    full = table(ROWS)
    assert max(map(len, full.splitlines())) == len(full.splitlines()[0]) > 70 and "more column" not in full
    assert "None" not in full and full.splitlines()[2].split()[-2:] == ["-", "yy"]
    cut = table(ROWS, width=58).splitlines()  # text cut to 32 columns before whole columns go
    assert max(map(len, cut)) <= 58 and cut[2].split() == ["0", "x" * 31 + "…", "1.5", "-", "yy"]
    narrow = table(ROWS, width=44)
    lines = narrow.splitlines()
    assert all(len(line) <= 44 for line in lines) and lines[0].split() == ["id", "name", "loss"]
    assert lines[-1] == "(2 more columns; --wide shows every column)"  # their names do not fit in 44
    assert table(ROWS, width=50).splitlines()[-1] == "(1 more column: note; --wide shows every column)"
    assert table(ROWS, width=200) == full
    with table_width(44):  # what a verb sets while it prints to a terminal
        assert table(ROWS) == narrow
    assert table(ROWS) == full  # and files written afterwards are whole
