"""A ladder with run-to-run noise, for the interval, cross-validation and several-store tests.

Two candidates (4,4 and 4,1, laws LAWS) at eight shapes (L, d) with d/L from 32 to 75, three seeds each; a run's
val_loss is law(N)·exp(SIGMA·z) with z a standard normal drawn from a generator seeded by the run's candidate,
shape and seed, so the store is the same on every machine and the truth (law and noise) is known. The laws bend
enough over the ladder's N (the reducible loss falls tenfold) for their parameters to be identified.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np

from costlaw.analysis.store.ingest import ingest
from costlaw.costmodel import params_non_embedding
from tests.support.synth_runs import write_run

_spec = importlib.util.spec_from_file_location("analysis_test_noisy_fixtures", Path(__file__).with_name("fixtures.py"))
FX = importlib.util.module_from_spec(_spec)  # data/ is not a package: its modules load by path
_spec.loader.exec_module(FX)
model, run_config = FX.model, FX.run_config

SHAPES = ((2, 64), (3, 128), (4, 192), (4, 256), (5, 320), (6, 384), (6, 448), (8, 512))
LAWS = {"4,4": (3.0e5, 0.5, 1.60), "4,1": (4.0e5, 0.5, 1.65)}  # (a, b, E) of L(N) = (a/N)^b + E
LABELS = tuple(LAWS)
SEEDS = (0, 1, 2)
SIGMA = 0.02  # sd of log loss between seeds


def noise(label: str, L: int, d: int, seed: int) -> float:
    key = hashlib.sha256(f"{label}/{L}/{d}/{seed}".encode()).digest()
    return float(np.random.default_rng(int.from_bytes(key[:8], "little")).standard_normal())


def law_loss(label: str, N: float) -> float:
    a, b, E = LAWS[label]
    return (a / N) ** b + E


def loss_of(label: str, L: int, d: int, seed: int) -> float:
    return law_loss(label, params_non_embedding(model(label, L, d))) * float(np.exp(SIGMA * noise(label, L, d, seed)))


def write_runs(root: Path, seeds=SEEDS, labels=LABELS, shapes=SHAPES) -> None:
    for label in labels:
        for L, d in shapes:
            for seed in seeds:
                loss = loss_of(label, L, d, seed)
                write_run(root, run_config(model(label, L, d), seed=seed), sweep="noisy", final_loss=loss + 0.01,
                          evals=[{"eval": "val_loss", "tags": {"context": 128}, "metrics": {"loss": loss,
                                                                                           "tokens": 4096}}])


def build(tmp: Path, name: str = "noisy", seeds=SEEDS) -> Path:
    """The ladder's runs at `seeds`, ingested into tmp/<name>.duckdb."""
    root, db = tmp / f"{name}-root", tmp / f"{name}.duckdb"
    write_runs(root, seeds)
    ingest(root, db)
    return db
