"""Fixtures for the fitting tests: the published Chinchilla data (skipped when ../shared is absent) and
synthetic data drawn from known parameters."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from costlaw.fitting import get_law

CHINCHILLA_CSV = Path("data") / "chinchilla" / "svg_extracted_data.csv"
CHINCHILLA_SHA256 = "193478df4e90f040016431996c45682659306840ecdadf83cfb9cd5ca0aa1b30"


def shared_dir() -> tuple[Path | None, str]:
    """The shared directory and where it was looked for: $COSTLAW_SHARED, else a `shared/` beside the repo
    root or beside any of its ancestors (a worktree may sit deeper than the main checkout)."""
    env = os.environ.get("COSTLAW_SHARED")
    if env:
        p = Path(env).expanduser()
        return (p if (p / CHINCHILLA_CSV).is_file() else None), f"COSTLAW_SHARED={env}"
    repo = Path(__file__).resolve().parents[2]
    looked = []
    for base in repo.parents:
        cand = base / "shared"
        looked.append(str(cand))
        if (cand / CHINCHILLA_CSV).is_file():
            return cand, str(cand)
    return None, ", ".join(looked[:3])


@pytest.fixture(scope="session")
def chinchilla():
    """Epoch's 240 rows: N, D = FLOP/(6N), loss, C; plus anchors.json."""
    import pandas as pd

    root, where = shared_dir()
    if root is None:
        pytest.skip(f"Chinchilla data absent ({CHINCHILLA_CSV} not found via {where}); "
                    "set COSTLAW_SHARED to the shared directory to run the published-data tests")
    path = root / CHINCHILLA_CSV
    assert hashlib.sha256(path.read_bytes()).hexdigest() == CHINCHILLA_SHA256, f"{path} differs from SOURCE.md"
    raw = pd.read_csv(path)
    df = raw[raw.loss < sorted(raw.loss)[-5]]
    N = df["Model Size"].to_numpy()
    C = df["Training FLOP"].to_numpy()
    return {"path": path, "raw": raw, "N": N, "C": C, "D": C / (6 * N), "X": np.column_stack([N, C / (6 * N)]),
            "y": df.loss.to_numpy(),
            "anchors": json.loads((path.parent / "anchors.json").read_text())["anchors"]}


# Known parameters per law, on grids like the project's sweeps: gqa-size from the GQA paper's family sizes,
# power-plus-constant the paper's 470M loss-vs-heads fit, chinchilla Epoch's headline.
TRUTH = {
    "gqa-size": {"a": 8.8e7, "b": 0.32, "E": 1.9},
    "power-plus-constant": {"a": 0.579, "b": -0.124, "c": 2.473},
    "chinchilla": {"A": 482.0, "B": 2085.4, "E": 1.817, "alpha": 0.348, "beta": 0.366},
    "compute": {"A": 1000.0, "E": 1.7, "alpha": 0.15},
}


def design(name: str, n: int | None = None) -> np.ndarray:
    if name == "gqa-size":
        return np.geomspace(3e6, 1.2e9, n or 10)[:, None]
    if name == "power-plus-constant":
        return 2.0 ** np.arange(n or 8)[:, None]
    if name == "compute":
        return np.geomspace(1e17, 1e21, n or 12)[:, None]
    side = int(np.sqrt(n)) if n else 6
    N, D = np.meshgrid(np.geomspace(5e7, 1e10, side), np.geomspace(1e9, 3e11, side))
    return np.column_stack([N.ravel(), D.ravel()])


@pytest.fixture
def synthetic():
    """synthetic(law_name, n=None, noise=0.0, seed=0, params=None) -> (X, y, true params); noise is the sd of
    a Gaussian on log y."""

    def make(name, n=None, noise=0.0, seed=0, params=None):
        law = get_law(name)
        params = params or TRUTH[name]
        X = design(name, n)
        y = law.predict(params, X)
        if noise:
            y = y * np.exp(np.random.default_rng(seed).normal(0.0, noise, len(y)))
        return X, y, params

    return make
