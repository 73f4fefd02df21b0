"""The fixture the tests of tests/studies/ share: `costlaw ARGS` run in this process (see numbers.py)."""

from __future__ import annotations

import pytest

from tests.studies.readme_numbers import REPO


@pytest.fixture
def cli(capsys, monkeypatch):
    """`costlaw ARGS` in this process from the checkout's root (the READMEs' paths are relative to it)."""
    from costlaw.cli import main

    monkeypatch.chdir(REPO)

    def run(args):
        capsys.readouterr()
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        assert rc == 0, f"costlaw {' '.join(map(str, args))}: exit {rc}: {err}"
        return out

    return run
