"""Several stores read as one: rows stacked with their store, a run held twice kept once (its newest DONE)."""

import pytest

from costlaw.analysis.store import ingest
from costlaw.analysis.store.union import as_list, query_stores
from costlaw.costmodel import preset
from costlaw.costmodel.core.errors import CostlawError
from costlaw.runs.config import DataConfig, RunConfig, TrainConfig
from tests.support.synth_runs import write_run


def _cfg(d: int, seed: int = 0) -> dict:
    model = preset("gqa-3m", vocab_size=257).replace(d_model=d)
    return RunConfig(model=model, data=DataConfig(seq_len=64), train=TrainConfig(steps=10), seed=seed).to_dict()


def test_two_stores_read_as_one(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_run(a, _cfg(128))
    write_run(a, _cfg(256))
    write_run(b, _cfg(256))  # the same run in both stores
    write_run(b, _cfg(384))
    ingest(a, tmp_path / "a.duckdb")
    ingest(b, tmp_path / "b.duckdb")
    df = query_stores([tmp_path / "a.duckdb", tmp_path / "b.duckdb"],
                      "SELECT run_id, d_model, done_mtime_ns FROM runs ORDER BY d_model")
    assert sorted(df["d_model"]) == [128, 256, 384]
    assert df["run_id"].is_unique
    newer = df.loc[df["d_model"] == 256, "store"].item()
    assert newer == str(tmp_path / "b.duckdb")  # written last, so its DONE is the newest
    one = query_stores(str(tmp_path / "a.duckdb"), "SELECT d_model FROM runs ORDER BY 1")
    assert list(one["d_model"]) == [128, 256] and set(one["store"]) == {str(tmp_path / "a.duckdb")}


def test_each_store_once(tmp_path):
    with pytest.raises(CostlawError, match="given twice"):
        as_list([tmp_path / "x.duckdb", str(tmp_path / "x.duckdb")])
    with pytest.raises(CostlawError, match="--db: required"):
        as_list([])
