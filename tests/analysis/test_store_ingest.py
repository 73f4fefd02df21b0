"""costlaw ingest: classification, idempotence, replacement of requeued runs, views, migrations, fits, locks."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from costlaw.analysis.store import SCHEMA_VERSION, ingest, query_df, write_fits
from costlaw.analysis.store.flatten import RUN_COLUMNS, run_id_of
from costlaw.analysis.store.lock import write_lock
from costlaw.analysis.store.schema import MIGRATIONS, migrate
from costlaw.costmodel import CostlawError, preset
from costlaw.costmodel.core.files import repair_jsonl
from costlaw.costmodel.core.rundir import RunDir
from costlaw.runs.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from tests.support.synth_runs import metrics_lines, standard_evals, write_run


def cfg(h=4, kv=2, seed=0, d=128, name="", **model):
    m = preset("gqa-3m", vocab_size=257).replace(d_model=d, n_heads=h, n_kv_heads=kv, **model)
    return RunConfig(model=m, data=DataConfig(seq_len=64), train=TrainConfig(steps=20, batch_size=2),
                     eval=EvalConfig(contexts=(64,)), seed=seed, name=name or f"h{h}kv{kv}s{seed}")


def dump(db) -> dict:
    """Every table's full content, sorted, for byte-for-byte comparison."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        names = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
        return {n: con.execute(f"SELECT * FROM {n} ORDER BY ALL").fetchall() for n in names}
    finally:
        con.close()


def rows(db, sql):
    return query_df(db, sql).rows(named=True)


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    r.mkdir()
    return r


# ---------------------------------------------------------------- the synthetic writer follows the format
def test_synth_matches_rundir_writers(tmp_path):
    c = cfg()
    d = write_run(tmp_path / "a", c.to_dict())
    doc = json.loads((d / "config.json").read_text())
    real = RunDir(tmp_path / "b" / "runs" / c.run_id).write_config(c)
    assert d.name == c.run_id == doc["run_id"] == real["run_id"] == run_id_of(real["config"])
    assert doc["model_id"] == real["model_id"] and doc["config"] == real["config"]
    assert set(doc) == set(real)


# ---------------------------------------------------------------- basic ingest and the views
def test_ingest_and_views_on_a_hand_made_root(root, tmp_path):
    db = tmp_path / "r.duckdb"
    losses = {(4, 1, 0): 3.0, (4, 1, 1): 3.2, (4, 4, 0): 2.5, (4, 4, 1): 2.7}
    for (h, kv, seed), loss in losses.items():
        write_run(root, cfg(h, kv, seed).to_dict(), steps=20, final_loss=loss, sweep="heads")
    failed = cfg(4, 2, 0)
    write_run(root, failed.to_dict(), steps=5, status="failed")
    hybrid = cfg(4, 2, 0, d=128, layout=["full*1", "sink_window(4,16)*3"])
    write_run(root, hybrid.to_dict(), steps=20, final_loss=2.9)
    rep = ingest(root, db)
    assert len(rep.ingested) == 6 and not (rep.incomplete or rep.corrupt or rep.skipped)
    assert rep.steps_rows == 5 * 20 + 5

    summary = rows(db, "SELECT * FROM run_summary ORDER BY run_id")
    assert len(summary) == 5  # the failed run is in runs, not in run_summary
    assert rows(db, "SELECT status, error FROM runs WHERE status <> 'completed'") == [
        {"status": "failed", "error": "RuntimeError: boom"}]
    by_id = {r["run_id"]: r for r in summary}
    h = by_id[hybrid.run_id]
    assert (h["family"], h["n_full_layers"], h["sparse_kind"], h["sink"], h["window"], h["block"]) == (
        "hybrid", 1, "sink_window", 4, 16, None)
    assert json.loads(h["layout"]) == ["full*1", "sink_window(4,16)*3"]
    g = by_id[cfg(4, 1, 0).run_id]
    assert (g["family"], g["n_heads"], g["n_kv_heads"], g["sparse_kind"], g["seq_len"]) == ("gqa", 4, 1, None, 64)
    assert g["n_params"] == g["params_non_embedding"] > 0 and g["gpu"] == "NVIDIA H100 80GB HBM3"
    assert g["train_flops"] == pytest.approx(g["c_train_flops_per_token"] * g["tokens"])

    groups = rows(db, "SELECT * FROM final_loss_by_heads WHERE family = 'gqa' ORDER BY n_kv_heads")
    assert [(r["n_heads"], r["n_kv_heads"], r["n_runs"]) for r in groups] == [(4, 1, 2), (4, 4, 2)]
    assert groups[0]["final_loss"] == pytest.approx(3.1) and groups[1]["final_loss"] == pytest.approx(2.6)
    assert groups[0]["final_loss_min"] == pytest.approx(3.0)

    kv = rows(db, f"SELECT * FROM kv_policy_evals WHERE run_id = '{g['run_id']}' ORDER BY keep")
    assert [(r["context"], r["policy"], r["keep"]) for r in kv] == [(64, "snapkv", 0.25), (64, "snapkv", 0.5)]
    assert kv[0]["delta_nll"] == pytest.approx(0.15) and kv[0]["kv_bytes"] == (1 << 20) // 4
    pos = rows(db, f"SELECT * FROM position_loss WHERE run_id = '{g['run_id']}' ORDER BY bucket")
    assert [(r["bucket"], r["start_pos"], r["end_pos"]) for r in pos] == [(0, 0, 16), (1, 16, 32), (2, 32, 48),
                                                                        (3, 48, 64)]
    inf = rows(db, f"SELECT * FROM inference WHERE run_id = '{g['run_id']}'")
    assert len(inf) == 1 and inf[0]["kv_bytes_ratio"] == 1.0 and inf[0]["batch"] == 1
    assert inf[0]["prefill_tokens"] == 64 - 16 and inf[0]["decode_tokens_per_s"] == 900.0
    assert len(rows(db, f"SELECT * FROM retrieval WHERE run_id = '{g['run_id']}'")) == 3
    step = rows(db, f"SELECT * FROM steps WHERE run_id = '{g['run_id']}' AND step = 20")[0]
    expect = metrics_lines(20, 2 * 64, seed=0)[-1]
    assert {k: step[k] for k in expect} == expect


def test_schema_columns_match_the_flattener(root, tmp_path):
    db = tmp_path / "r.duckdb"
    ingest(root, db)
    types = {"int": "BIGINT", "float": "DOUBLE", "str": "VARCHAR", "bool": "BOOLEAN", "json": "JSON",
             "int[]": "BIGINT[]"}
    got = rows(db, "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'runs' "
                   "ORDER BY ordinal_position")
    assert {r["column_name"]: r["data_type"] for r in got} == {
        **{c: types[t] for c, t in RUN_COLUMNS}, "ingested_at": "TIMESTAMP"}
    assert rows(db, "SELECT max(version) AS v FROM schema_version") == [{"v": SCHEMA_VERSION}]


# ---------------------------------------------------------------- idempotence
def test_ingest_twice_is_identical(root, tmp_path):
    for h, kv in ((4, 1), (4, 2), (4, 4)):
        write_run(root, cfg(h, kv).to_dict())
    db = tmp_path / "r.duckdb"
    first = ingest(root, db)
    before = dump(db)
    second = ingest(root, db)
    assert len(first.ingested) == 3 and second.unchanged == sorted(first.ingested)
    assert not second.ingested and not second.replaced and second.steps_rows == 0
    assert dump(db) == before
    # a database built from scratch holds the same rows (ingested_at aside)
    other = tmp_path / "other.duckdb"
    ingest(root, other)
    strip = lambda d: {k: [r for r in v] for k, v in d.items() if k not in ("runs", "schema_version")}
    assert strip(dump(other)) == strip(before)
    q = "SELECT * EXCLUDE (ingested_at) FROM runs ORDER BY run_id"
    assert query_df(db, q).equals(query_df(other, q))


def test_resumed_run_keeps_the_last_line_per_step(root, tmp_path):
    m = metrics_lines(10, 128)
    again = [dict(x, loss=x["loss"] + 1.0) for x in m[5:]]  # resumed from step 5: steps 6..10 logged twice
    write_run(root, cfg().to_dict(), metrics=m + again)
    db = tmp_path / "r.duckdb"
    rep = ingest(root, db)
    assert rep.steps_rows == 10
    got = rows(db, "SELECT step, loss FROM steps ORDER BY step")
    assert [r["step"] for r in got] == list(range(1, 11))
    assert [r["loss"] for r in got] == [x["loss"] for x in m[:5] + again]
    assert rows(db, "SELECT n_steps FROM runs") == [{"n_steps": 10}]


def test_nan_and_float_steps_take_the_line_by_line_path(root, tmp_path):
    d = write_run(root, cfg().to_dict(), steps=3, status="diverged")
    (d / "metrics.jsonl").write_text('{"step": 1, "loss": 3.0}\n{"step": 2.0, "loss": NaN}\n'
                                     '{"step": 3, "tokens": 384.0, "loss": Infinity}\n')
    db = tmp_path / "r.duckdb"
    rep = ingest(root, db)
    assert rep.ingested and not rep.corrupt
    assert rows(db, "SELECT step, tokens, loss FROM steps ORDER BY step") == [
        {"step": 1, "tokens": None, "loss": 3.0}, {"step": 2, "tokens": None, "loss": None},
        {"step": 3, "tokens": 384, "loss": None}]
    assert rows(db, "SELECT status FROM runs") == [{"status": "diverged"}]


# ---------------------------------------------------------------- incomplete runs
def test_killed_run_is_incomplete_then_ingested_once_finished(root, tmp_path):
    c = cfg()
    rd = RunDir(root / "runs" / c.run_id)
    rd.write_config(c)
    for m in metrics_lines(7, 128):
        rd.append_metrics(m)
    with open(rd.file("metrics.jsonl"), "ab") as f:
        f.write(b'{"step": 8, "tokens": 10')  # killed mid-append
    write_run(root, cfg(4, 4).to_dict())
    db = tmp_path / "r.duckdb"
    rep = ingest(root, db)
    assert [i["run_id"] for i in rep.incomplete] == [c.run_id] and not rep.corrupt
    assert "last step 7" in rep.incomplete[0]["reason"]
    for table in ("runs", "steps", "evals"):
        assert rows(db, f"SELECT count(*) AS n FROM {table} WHERE run_id = '{c.run_id}'") == [{"n": 0}]
    # resubmitted: the worker repairs the torn line, resumes, finishes
    repair_jsonl(rd.file("metrics.jsonl"))
    for m in metrics_lines(20, 128)[7:]:
        rd.append_metrics(m)
    for e in standard_evals(64):
        rd.append_eval(e["eval"], e["tags"], e["metrics"])
    rd.write_summary({"run_id": c.run_id, "status": "completed", "steps": 20, "final_loss": 2.5})
    rd.write_done(c.run_id, "completed")
    rep = ingest(root, db)
    assert rep.ingested == [c.run_id] and not rep.incomplete
    assert rows(db, f"SELECT count(*) AS n, max(step) AS m FROM steps WHERE run_id = '{c.run_id}'") == [
        {"n": 20, "m": 20}]
    # the store prices a run whose summary has no costs (failed before writing them) itself
    assert rows(db, f"SELECT params_total > 0 AS p FROM runs WHERE run_id = '{c.run_id}'") == [{"p": True}]


def test_preempted_run_is_incomplete(root, tmp_path):
    d = write_run(root, cfg().to_dict(), done=False)
    (d / "summary.json").write_text(json.dumps({"run_id": d.name, "status": "preempted"}))
    rep = ingest(root, tmp_path / "r.duckdb")
    assert len(rep.incomplete) == 1 and "summary status preempted" in rep.incomplete[0]["reason"]


# ---------------------------------------------------------------- corrupt runs
def _break(kind):
    def edit(d: Path) -> Path:
        p = {"config": d / "config.json", "summary": d / "summary.json", "done": d / "DONE",
             "metrics": d / "metrics.jsonl", "evals": d / "evals.jsonl"}
        if kind == "config_not_json":
            p["config"].write_text("{not json")
        elif kind == "done_id_mismatch":
            p["done"].write_text(json.dumps({"run_id": "0" * 16, "status": "completed"}))
        elif kind == "done_status_not_terminal":
            p["done"].write_text(json.dumps({"run_id": d.name, "status": "preempted"}))
        elif kind == "summary_missing":
            p["summary"].unlink()
        elif kind == "summary_status_disagrees":
            s = json.loads(p["summary"].read_text())
            p["summary"].write_text(json.dumps(dict(s, status="failed")))
        elif kind == "summary_id_mismatch":
            s = json.loads(p["summary"].read_text())
            p["summary"].write_text(json.dumps(dict(s, run_id="f" * 16)))
        elif kind == "summary_wrong_type":
            s = json.loads(p["summary"].read_text())
            p["summary"].write_text(json.dumps(dict(s, final_loss="low")))
        elif kind == "metrics_torn_last_line":
            with open(p["metrics"], "ab") as f:
                f.write(b'{"step": 21, "lo')
        elif kind == "metrics_wrong_type":
            with open(p["metrics"], "a") as f:
                f.write('{"step": 21, "loss": "high"}\n')
        elif kind == "metrics_no_step":
            with open(p["metrics"], "a") as f:
                f.write('{"loss": 1.0}\n')
        elif kind == "evals_bad_line":
            with open(p["evals"], "a") as f:
                f.write('{"eval": "val_loss", "tags": {}, "metrics": {"loss": "x"}}\n')
        elif kind == "run_id_not_config_hash":
            doc = json.loads(p["config"].read_text())
            doc["config"]["seed"] = 99
            p["config"].write_text(json.dumps(doc))
        elif kind == "model_id_mismatch":
            doc = json.loads(p["config"].read_text())
            p["config"].write_text(json.dumps(dict(doc, model_id="000000000000")))
        elif kind == "model_config_invalid":
            doc = json.loads(p["config"].read_text())
            doc["config"]["model"]["n_kv_heads"] = 3
            doc["run_id"] = run_id_of(doc["config"])
            p["config"].write_text(json.dumps(doc))
            for f in (p["summary"], p["done"]):
                f.write_text(f.read_text().replace(d.name, doc["run_id"]))
            return d.rename(d.parent / doc["run_id"])  # a run lives in the directory named by its id
        else:
            raise AssertionError(kind)
        return d
    return edit


CORRUPTIONS = {
    "config_not_json": "config.json: not valid JSON", "done_id_mismatch": "DONE: run_id",
    "done_status_not_terminal": "DONE: status", "summary_missing": "summary.json: missing",
    "summary_status_disagrees": "summary.json: status", "summary_id_mismatch": "summary.json: run_id",
    "summary_wrong_type": "summary.json: final_loss: expected a number",
    "metrics_torn_last_line": "metrics.jsonl: line 21: not valid JSON",
    "metrics_wrong_type": "metrics.jsonl: line 21: loss: expected a number", "metrics_no_step": "line 21 has no step",
    "evals_bad_line": "evals.jsonl: line", "run_id_not_config_hash": "is not the hash of its config",
    "model_id_mismatch": "model_id 000000000000 disagrees", "model_config_invalid": "model.n_kv_heads",
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_run_is_reported_and_skipped(kind, root, tmp_path):
    good = write_run(root, cfg(4, 4).to_dict())
    bad = _break(kind)(write_run(root, cfg(4, 1).to_dict()))
    db = tmp_path / "r.duckdb"
    rep = ingest(root, db)
    assert rep.ingested == [good.name]
    assert len(rep.corrupt) == 1 and rep.corrupt[0]["dir"] == str(bad), rep.corrupt
    assert CORRUPTIONS[kind] in rep.corrupt[0]["reason"]
    assert rows(db, "SELECT count(*) AS n FROM runs") == [{"n": 1}]
    assert rows(db, f"SELECT count(DISTINCT run_id) AS n FROM steps WHERE run_id <> '{good.name}'") == [{"n": 0}]
    assert rows(db, f"SELECT count(*) AS n FROM evals WHERE run_id <> '{good.name}'") == [{"n": 0}]


def test_bad_run_in_a_batch_does_not_block_the_others(root, tmp_path):
    dirs = [write_run(root, cfg(4, kv, s).to_dict()) for kv in (1, 2, 4) for s in (0, 1)]
    _break("metrics_wrong_type")(dirs[2])
    rep = ingest(root, tmp_path / "r.duckdb")
    assert len(rep.ingested) == 5 and [c["dir"] for c in rep.corrupt] == [str(dirs[2])]
    assert rep.steps_rows == 5 * 20


# ---------------------------------------------------------------- requeued runs, duplicates
def test_newer_done_replaces_the_run_in_one_go(root, tmp_path):
    c = cfg()
    d = write_run(root, c.to_dict(), steps=20, final_loss=3.0)
    db = tmp_path / "r.duckdb"
    ingest(root, db)
    old = os.stat(d / "DONE").st_mtime_ns
    write_run(root, c.to_dict(), steps=12, final_loss=2.0)  # requeued from scratch, finished again
    os.utime(d / "DONE", ns=(old + 10**9, old + 10**9))
    rep = ingest(root, db)
    assert rep.replaced == [c.run_id] and not rep.ingested
    assert rows(db, "SELECT final_loss, n_steps FROM runs") == [{"final_loss": 2.0, "n_steps": 12}]
    assert rows(db, "SELECT count(*) AS n, max(step) AS m FROM steps") == [{"n": 12, "m": 12}]


def test_changed_copy_with_older_done_is_skipped(root, tmp_path):
    c = cfg()
    d = write_run(root, c.to_dict(), final_loss=3.0)
    db = tmp_path / "r.duckdb"
    ingest(root, db)
    st = os.stat(d / "DONE")
    write_run(root, c.to_dict(), final_loss=1.0)
    os.utime(d / "DONE", ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))
    rep = ingest(root, db)
    assert not rep.replaced and len(rep.skipped) == 1 and "not newer" in rep.skipped[0]["reason"]
    assert rows(db, "SELECT final_loss FROM runs") == [{"final_loss": 3.0}]


def test_duplicate_directories_keep_the_newest(tmp_path):
    c = cfg()
    a = write_run(tmp_path / "root" / "a", c.to_dict(), final_loss=3.0)
    b = write_run(tmp_path / "root" / "b", c.to_dict(), final_loss=2.0)
    t = os.stat(a / "DONE").st_mtime_ns
    os.utime(b / "DONE", ns=(t + 10**9, t + 10**9))
    rep = ingest(tmp_path / "root", tmp_path / "r.duckdb")
    assert rep.ingested == [c.run_id] and [s["dir"] for s in rep.skipped] == [str(a)]
    assert rows(tmp_path / "r.duckdb", "SELECT final_loss, source_dir FROM runs") == [
        {"final_loss": 2.0, "source_dir": str(b)}]


# ---------------------------------------------------------------- migrations
def test_v1_database_is_upgraded_on_ingest(root, tmp_path):
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    migrate(con, db, target=1)  # a database as the first release wrote it
    assert [r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                      "WHERE table_name = 'evals'").fetchall()] == [
        "run_id", "eval", "tags", "metric", "value"]
    con.execute("INSERT INTO runs (run_id, model_id, status, final_loss) VALUES ('old0000000000000', 'm', "
                "'completed', 3.5)")
    con.execute("""INSERT INTO evals VALUES ('old0000000000000', 'kv_policy',
                   '{"context":4096,"keep":0.25,"policy":"snapkv"}', 'nll', 2.75)""")
    con.close()
    write_run(root, cfg().to_dict())
    rep = ingest(root, db)
    assert (rep.migrated_from, rep.schema_version) == (1, SCHEMA_VERSION) and len(rep.ingested) == 1
    assert [r["version"] for r in rows(db, "SELECT version FROM schema_version ORDER BY 1")] == list(
        range(1, len(MIGRATIONS) + 1))
    back = rows(db, "SELECT context, policy, keep, budget, value FROM evals WHERE run_id = 'old0000000000000'")
    assert back == [{"context": 4096, "policy": "snapkv", "keep": 0.25, "budget": None, "value": 2.75}]
    assert rows(db, "SELECT count(*) AS n FROM runs") == [{"n": 2}]
    assert rows(db, "SELECT count(*) AS n FROM fits") == [{"n": 0}]
    assert len(rows(db, "SELECT * FROM kv_policy_evals")) == 3  # the new run's two keep ratios, the old run's one
    assert rows(db, "SELECT nll FROM kv_policy_evals WHERE run_id = 'old0000000000000'") == [{"nll": 2.75}]


def test_newer_schema_is_refused(root, tmp_path):
    db = tmp_path / "new.duckdb"
    ingest(root, db)
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO schema_version VALUES (?, now()::TIMESTAMP, 'future')", [SCHEMA_VERSION + 1])
    con.close()
    with pytest.raises(CostlawError, match="newer than this costlaw"):
        ingest(root, db)
    with pytest.raises(CostlawError, match="newer than this costlaw"):
        query_df(db, "SELECT 1")


# ---------------------------------------------------------------- fits
def test_write_fits_upserts(root, tmp_path):
    db = tmp_path / "r.duckdb"
    with pytest.raises(CostlawError, match="no such results file"):
        write_fits(db, [{"law": "power", "params": {"a": 1}}])
    ingest(root, db)
    row = {"law": "power_plus_constant", "group_keys": {"n_heads": 8, "n_kv_heads": 2},
           "params": {"a": 1.0, "b": -0.3, "c": 2.0}, "objective": 1e-4, "r2": 0.99, "n_points": 6,
           "ci95": {"b": [-0.35, -0.25]}, "source_query": "SELECT * FROM run_summary"}
    [fid] = write_fits(db, [row])
    [fid2] = write_fits(db, [dict(row, params={"a": 1.1, "b": -0.31, "c": 2.01})])
    assert fid == fid2
    got = rows(db, "SELECT fit_id, law, params, group_keys, r2 FROM fits")
    assert len(got) == 1 and json.loads(got[0]["params"])["a"] == 1.1
    assert json.loads(got[0]["group_keys"]) == {"n_heads": 8, "n_kv_heads": 2}
    with pytest.raises(CostlawError, match="fits.slope: unknown column"):
        write_fits(db, [dict(row, slope=1)])


# ---------------------------------------------------------------- locks and errors
def test_second_writer_waits_then_names_the_holder(root, tmp_path):
    db = tmp_path / "r.duckdb"
    with write_lock(db), pytest.raises(CostlawError, match=f"PID {os.getpid()}"):
        ingest(root, db, wait=0.3)
    assert ingest(root, db, wait=0.3).schema_version == SCHEMA_VERSION


def test_cli_ingest(root, tmp_path):
    write_run(root, cfg().to_dict())
    d = write_run(root, cfg(4, 4).to_dict(), done=False)
    db = tmp_path / "r.duckdb"
    run = lambda *a: subprocess.run([sys.executable, "-m", "costlaw", "ingest", *a], capture_output=True, text=True)
    out = run("--root", str(root), "--db", str(db))
    assert out.returncode == 0, out.stderr
    assert "ingested 1 (1 new, 0 replaced), unchanged 0, incomplete 1" in out.stdout and str(d) in out.stdout
    assert f"created {db} (schema version {SCHEMA_VERSION})" in out.stdout and "upgraded" not in out.stdout
    out = run("--root", str(root), "--db", str(db), "--json")
    rep = json.loads(out.stdout)
    assert rep["unchanged"] == [cfg().run_id] and rep["incomplete"][0]["dir"] == str(d)
    out = run("--root", str(tmp_path / "nope"), "--db", str(db))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--root: no such directory" in out.stderr


# ---------------------------------------------------------------- what the database itself refuses
def test_a_run_the_database_refuses_is_left_out_alone(root, tmp_path, monkeypatch):
    ingest_module = importlib.import_module("costlaw.analysis.store.ingest")
    dirs = [write_run(root, cfg(4, kv, s).to_dict()) for kv in (1, 2, 4) for s in (0, 1)]
    refused = dirs[3].name
    real = ingest_module._write

    def write(con, rows, *args, **kw):  # a value that passed every check but the database's
        if any(r["run_id"] == refused for r in rows):
            raise duckdb.ConstraintException(f"Constraint Error: run {refused} refused\nsecond line")
        return real(con, rows, *args, **kw)

    monkeypatch.setattr(ingest_module, "_write", write)
    db = tmp_path / "r.duckdb"
    rep = ingest(root, db)
    assert sorted(rep.ingested) == sorted(d.name for d in dirs if d.name != refused)
    assert rep.corrupt == [{"dir": str(dirs[3]), "run_id": refused,
                            "reason": f"the database refused its rows (Constraint Error: run {refused} refused)"}]
    assert rows(db, "SELECT count(*) AS n, count(DISTINCT run_id) AS r FROM steps") == [{"n": 5 * 20, "r": 5}]
    assert rep.steps_rows == 5 * 20 and rep.evals_rows == rows(db, "SELECT count(*) AS n FROM evals")[0]["n"]


def test_a_failing_database_stops_the_ingest_in_one_line(root, tmp_path, monkeypatch):
    ingest_module = importlib.import_module("costlaw.analysis.store.ingest")
    for s in range(4):
        write_run(root, cfg(4, 1, s).to_dict())
    calls = []
    real = ingest_module._write

    def write(con, rows, *args, **kw):  # the disk fills up during the second batch
        calls.append(len(rows))
        if len(calls) > 1:
            raise duckdb.IOException("IO Error: No space left on device")
        return real(con, rows, *args, **kw)

    monkeypatch.setattr(ingest_module, "_write", write)
    db = tmp_path / "r.duckdb"
    with pytest.raises(CostlawError) as e:
        ingest(root, db, batch_bytes=1)  # one run per batch
    assert str(e.value).startswith(f"--db: writing {db} failed (IO Error: No space left on device); 1 runs were "
                                   "committed before it")
    assert calls == [1, 1]  # not retried run by run: it is not one run's data
    assert rows(db, "SELECT count(*) AS n FROM runs") == [{"n": 1}]  # the first batch, whole
    assert rows(db, "SELECT count(DISTINCT run_id) AS n FROM steps") == [{"n": 1}]
