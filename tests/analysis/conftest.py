"""Shared by the analysis tests: the helper modules under data/ (loaded by path: data/ is not a package) and
the CLI run in this process."""

import importlib.util
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def load_data(name: str):
    """tests/analysis/data/<name>.py as a module (fixtures: the known-law store builder; browser: Chromium)."""
    spec = importlib.util.spec_from_file_location(f"analysis_test_{name}", DATA / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def cli(capsys):
    """`costlaw ARGS` in this process (the CLI's own entry point) -> (exit code, stdout, stderr)."""
    from costlaw.cli import main

    def run(*args):
        capsys.readouterr()
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err

    return run
