"""Load a script of the repository (a GPU benchmark, a study's helper) as a module, for tests of its pure parts."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def load_script(path: Path, name: str | None = None):
    spec = importlib.util.spec_from_file_location(name or Path(path).stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
