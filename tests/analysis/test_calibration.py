"""analysis.calibration and `costlaw calibrate` on synthetic measurements drawn from known linear laws (one real
ModelConfig per family, as benchmarks/calibrate_infer_gpu.py builds them): the fits recover the laws, the table
flags exact KV, the calibration file round-trips through the recommender and raises its latency estimate above
the roofline, bad input names the field, and the verb writes its files."""

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from costlaw.analysis import calibration as cal
from costlaw.analysis.objective import Objective, load_calibration
from costlaw.cli import main as costlaw
from costlaw.costmodel import (
    KVPolicy,
    ModelConfig,
    c_infer,
    hybrid_layout,
    kv_cache_bytes,
    m_infer,
    params_total,
    prefill_flops,
    roofline,
)
from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.presets import paper_ffn

FITS = Path(__file__).parent / "data" / "paper_like_fits.json"
BASE = ModelConfig(d_model=768, n_layers=12, n_heads=12, n_kv_heads=4, head_dim=64, ffn_dim=paper_ffn(768),
                   vocab_size=50304)
CONFIGS = {"gqa": BASE, "hybrid": BASE.replace(layout=hybrid_layout(12, "sink_window(64,1024)", full_layers=4)),
           "compressed": BASE.replace(kv_policy=KVPolicy("snapkv", keep=0.25))}
# family -> (decode overhead s, bytes/s a decode step reads at, prefill FLOP/s): below the H100's datasheet
# 3.35 TB/s and 989 TFLOP/s, as real kernels are.
TRUTH = {"gqa": (3e-4, 1.8e12, 6e14), "hybrid": (3.5e-4, 1.2e12, 4e14), "compressed": (4e-4, 1.5e12, 5e14)}
PREFILL_OVERHEAD_S = 2e-3
ACTIVATION_BYTES_PER_TOKEN = 30_000  # peak = weights + 1.5 x KV (prefill's own copies) + activations
CONTEXTS = [1024 * 2**k for k in range(7)]
G = 64
KV_PER_TOKEN = 2 * BASE.kv_dim * BASE.n_layers * 2  # K and V, every layer, bf16


def synthetic_doc(gpu_key="H100-SXM", peak=True) -> dict:
    rows = []
    for fam, cfg in CONFIGS.items():
        overhead, bw, flops_rate = TRUTH[fam]
        W = params_total(cfg) * 2
        for T in CONTEXTS:
            P = T - G
            decode = sum(overhead + (W + kv_cache_bytes(cfg, t)) / bw for t in range(P + 1, T + 1))
            kv = kv_cache_bytes(cfg, T)
            # SnapKV keeps a quarter of the prompt and every decoded token, not a quarter of all T
            kv_meas = kv if fam != "compressed" else (round(0.25 * P) + G) * KV_PER_TOKEN
            rows.append({"family": fam, "label": fam, "model": cfg.to_dict(), "model_id": cfg.config_id,
                         "context": T, "batch": 1, "dtype": "bf16", "prefill_tokens": P,
                         "prefill_s": PREFILL_OVERHEAD_S + prefill_flops(cfg, P) / flops_rate, "decode_tokens": G,
                         "decode_s": decode, "kv_bytes_measured": kv_meas, "kv_bytes_analytic": kv,
                         "weights_bytes": W,
                         "peak_bytes": int(W + 1.5 * kv + ACTIVATION_BYTES_PER_TOKEN * T) if peak else 0,
                         "m_infer_bytes_analytic": float(m_infer(cfg, T) * 2),
                         "c_infer_flops_per_token": float(c_infer(cfg, T))})
    return {"format": cal.FORMAT, "gpu": "NVIDIA H100 80GB HBM3", "gpu_key": gpu_key, "rows": rows}


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    path = tmp_path_factory.mktemp("cal") / "measurements.json"
    path.write_text(json.dumps(synthetic_doc()))
    doc = cal.load_measurements(path)
    return {"path": path, "rows": doc["rows"], "fits": cal.fit_laws(doc["rows"])}


def test_fits_recover_the_laws(measured):
    laws = measured["fits"]["laws"]
    gqa = laws["gqa"]
    W = params_total(BASE) * 2
    overhead, bw, flops_rate = TRUTH["gqa"]
    # gqa's step reads W + KV_PER_TOKEN * t bytes: linear in T with slope KV_PER_TOKEN / bw
    assert gqa["decode_s_per_token"]["params"]["b"] == pytest.approx(KV_PER_TOKEN / bw, rel=1e-6)
    mean_step = -G / 2 + 0.5  # the decode steps' mean context is T - G/2 + 1/2
    assert gqa["decode_s_per_token"]["params"]["a"] == pytest.approx(
        overhead + (W + KV_PER_TOKEN * mean_step) / bw, rel=1e-6)
    assert gqa["kv_bytes_measured"]["params"]["b"] == pytest.approx(KV_PER_TOKEN, rel=1e-8)
    assert gqa["kv_bytes_measured"]["params"]["a"] < 1e-6 * KV_PER_TOKEN * CONTEXTS[0]
    assert gqa["peak_bytes"]["params"]["b"] == pytest.approx(1.5 * KV_PER_TOKEN + ACTIVATION_BYTES_PER_TOKEN, rel=1e-6)
    assert gqa["peak_bytes"]["params"]["a"] == pytest.approx(W, rel=1e-6)
    for law in gqa.values():
        assert law["law"] == "linear" and law["x"] == "context" and law["success"]
    assert gqa["decode_s_per_token"]["r2"] > 1 - 1e-12
    # The hybrid's window layers stop growing at 1088 tokens: its KV is less than linear at 1K, so R² < 1.
    assert 0.99 < laws["hybrid"]["kv_bytes_measured"]["r2"] < 1 - 1e-9
    # Rates: decode time against bytes read, prefill time against FLOPs, per family.
    for fam, (overhead, bw, flops_rate) in TRUTH.items():
        rate = measured["fits"]["rates"][fam]
        assert rate["decode"]["x"] == "decode_bytes_per_token"
        assert rate["decode"]["params"]["a"] == pytest.approx(overhead, rel=1e-6)
        assert 1 / rate["decode"]["params"]["b"] == pytest.approx(bw, rel=1e-6)
        assert rate["prefill"]["params"]["a"] == pytest.approx(PREFILL_OVERHEAD_S, rel=1e-6)
        assert 1 / rate["prefill"]["params"]["b"] == pytest.approx(flops_rate, rel=1e-6)
    # Pooled over families with different rates: a compromise, and the fit says so.
    assert measured["fits"]["rates"]["all"]["decode"]["r2"] < 0.99


def test_table_flags_exact_kv_and_prices_the_roofline(measured):
    tab = cal.table(measured["rows"], measured["fits"])
    assert len(tab) == 3 * len(CONTEXTS)
    for t in tab:
        cfg = CONFIGS[t["family"]]
        if t["family"] == "compressed":
            assert not t["kv_exact"] and t["kv_ratio"] > 1  # the decoded tokens are all kept
        else:
            assert t["kv_exact"] and t["kv_ratio"] == 1.0
        T = t["context"]
        assert t["memory_ratio"] == pytest.approx(t["peak_bytes"] / (m_infer(cfg, T) * 2))
        steps = range(T - G + 1, T + 1)
        roof = np.mean([roofline(cfg, s, "H100-SXM")["decode_s_per_token"] for s in steps])
        assert t["decode_s_roofline"] == pytest.approx(roof, rel=1e-12)
        assert t["decode_ratio"] > 1  # the synthetic rates are below the datasheet's
        assert t["prefill_s_roofline"] == pytest.approx(roofline(cfg, T - G, "H100-SXM")["prefill_s"])
        # The calibration file's rates reproduce the measurement they came from.
        assert t["decode_s_calibrated"] == pytest.approx(t["decode_s_per_token"], rel=1e-6)
    md = cal.render_markdown(measured["rows"], measured["fits"])
    assert "| gqa | 1K | 12.00 | 12.00 | yes | 1 |" in md
    assert "| compressed | 64K |" in md and "| no |" in md
    assert "| hybrid | decode_s_per_token |" in md and "| gqa | 300 | 1.8 T |" in md


def test_calibration_file_round_trips_through_the_recommender(measured, tmp_path):
    doc = cal.calibration_file(measured["rows"], measured["fits"])
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(doc))
    loaded = load_calibration(path)["H100-SXM"]
    assert set(loaded.families) == {"gqa", "hybrid", "compressed"}
    T = 65536
    for fam, (overhead, bw, flops_rate) in TRUTH.items():
        rates = loaded.for_family(fam)
        assert rates.family == fam and rates.overhead_s == pytest.approx(overhead, rel=1e-6)
        assert rates.bytes_per_s == pytest.approx(bw, rel=1e-6)
        assert rates.flops_per_s == pytest.approx(flops_rate, rel=1e-6)
        cfg = CONFIGS[fam]
        priced = Objective(gpu="H100", calibration={"H100-SXM": loaded}).price(cfg, T)
        expect = overhead + (params_total(cfg) * 2 + kv_cache_bytes(cfg, T)) / bw
        assert priced["latency_model"] == "calibrated" and priced["calibration"] == fam
        assert priced["decode_ms"] == pytest.approx(1e3 * expect, rel=1e-6)
        assert priced["decode_ms"] > Objective(gpu="H100").price(cfg, T)["decode_ms"]
    # A family without its own entry takes the GPU-level (pooled) rates.
    del doc["gpus"]["H100-SXM"]["families"]["hybrid"]
    path.write_text(json.dumps(doc))
    fallback = load_calibration(path)["H100-SXM"]
    priced = Objective(gpu="H100", calibration={"H100-SXM": fallback}).price(CONFIGS["hybrid"], T)
    assert priced["calibration"] == "gpu"
    pooled = measured["fits"]["rates"]["all"]["decode"]["params"]
    assert fallback.overhead_s == pytest.approx(pooled["a"]) and fallback.bytes_per_s == pytest.approx(1 / pooled["b"])


def test_recommend_cli_prices_the_winner_with_its_family_rates(measured, tmp_path, capsys):
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(cal.calibration_file(measured["rows"], measured["fits"])))

    def winner(*extra):
        capsys.readouterr()
        rc = costlaw(["recommend", "--fits", str(FITS), "--json", "--target-loss", "2.5", "--context", "128K",
                   "--families", "gqa", "--gpu", "H100", *extra])
        out, err = capsys.readouterr()
        assert rc == 0, err
        doc = json.loads(out)
        return doc, doc["by_context"][0]["winner_prices"]

    doc, p = winner("--calibration", str(path))
    roof = winner()[1]
    overhead, bw, _ = TRUTH["gqa"]
    assert p["calibration"] == "gqa"
    assert p["decode_ms"] == pytest.approx(1e3 * (overhead + (p["params_total"] * 2 + p["kv_cache_bytes"]) / bw),
                                           rel=1e-6)
    assert p["decode_ms"] > roof["decode_ms"]
    assert "gqa, hybrid, compressed at their own rates" in doc["objective"]["latency_model"]


BAD = [
    (lambda d: d.update(format="costlaw-calibration/1"), "format: expected"),
    (lambda d: d.update(gpu_key="XPU-9000"), "gpu_key: unknown GPU 'XPU-9000'"),
    (lambda d: d.update(rows=[]), "rows: missing or empty"),
    (lambda d: d["rows"][1].update(decode_s=-1.0), r"rows\[1\]\.decode_s: must be > 0"),
    (lambda d: d["rows"][0].pop("peak_bytes"), r"rows\[0\]\.peak_bytes: missing"),
    (lambda d: d["rows"][2].update(kv_bytes_measured="12 MiB"), r"rows\[2\]\.kv_bytes_measured: must be a whole"),
    (lambda d: d["rows"][0].update(batch=4), r"rows\[0\]\.batch: 4"),
    (lambda d: d["rows"][0].update(decode_tokens=32), r"rows\[0\]\.context: 1024 but prefill_tokens \+ decode"),
    (lambda d: d["rows"][0]["model"].update(n_kv_heads=5), r"rows\[0\]\.model\.n_kv_heads: 5 does not divide"),
    (lambda d: d["rows"][0].update(family="hybrid"), r"rows\[0\]\.family: 'hybrid' but its model is a gqa"),
    (lambda d: d["rows"][0].update(family="moe"), r"rows\[0\]\.family: 'moe' is not one of"),
    (lambda d: d["rows"][1].update(context=1024, prefill_tokens=960), r"rows\[1\]: a second gqa row at context 1024"),
    (lambda d: d["rows"][1].update(model=BASE.replace(n_kv_heads=2).to_dict()),
     r"rows\[1\]\.model: family gqa has a second model"),
]


@pytest.mark.parametrize("mutate, message", BAD)
def test_bad_measurements_name_the_field(tmp_path, mutate, message):
    doc = synthetic_doc()
    mutate(doc)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(CostlawError, match=message) as e:
        cal.load_measurements(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("mutate, message", [
    (lambda e: e["families"].update(moe=e["families"]["gqa"]), "gpus.H100-SXM.families.moe is not a family"),
    (lambda e: e["families"]["gqa"]["decode"].update(bytes_per_s=0),
     "gpus.H100-SXM.families.gqa.decode.bytes_per_s must be a positive number"),
    (lambda e: e.update(families=[1]), "gpus.H100-SXM.families must be a table"),
])
def test_bad_calibration_families_name_the_field(measured, tmp_path, mutate, message):
    doc = copy.deepcopy(cal.calibration_file(measured["rows"], measured["fits"]))
    mutate(doc["gpus"]["H100-SXM"])
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(CostlawError, match=message):
        load_calibration(path)


def test_verb_writes_its_files_and_the_csv_reproduces_the_fits(measured, tmp_path, capsys):
    out = tmp_path / "out"
    assert costlaw(["calibrate", str(measured["path"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("calibration.json", "calibration.md", "measurements.csv", "calibration.png", "calibration.svg"):
        assert (out / name).stat().st_size > 0, name
        assert f"wrote {out / name}" in printed
    # the summary prints each family's rates as the calibration file holds them
    gqa = next(line for line in printed.splitlines() if line.startswith("gqa "))
    assert "1.8 T" in gqa and "600 T" in gqa
    assert f"--gpu H100-SXM --calibration {out / 'calibration.json'}" in printed
    assert (out / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_calibration(out / "calibration.json")["H100-SXM"].families["hybrid"].bytes_per_s == pytest.approx(
        TRUTH["hybrid"][1], rel=1e-6)
    df = pd.read_csv(out / "measurements.csv")
    assert len(df) == 21 and {"decode_s_per_token", "prefill_s_per_token", "decode_bytes_per_token"} <= set(df)
    capsys.readouterr()
    assert costlaw(["fit", "--data", str(out / "measurements.csv"), "--law", "linear", "--x", "context",
                    "--y", "decode_s_per_token", "--group-by", "family", "--json"]) == 0
    by = {r["group"]["family"]: r["params"] for r in json.loads(capsys.readouterr().out)["candidates"]}
    for fam, law in measured["fits"]["laws"].items():
        for k in ("a", "b"):
            assert by[fam][k] == pytest.approx(law["decode_s_per_token"]["params"][k], rel=1e-9)


def test_verb_without_a_gpu_key_skips_only_the_rates(tmp_path, capsys):
    # A CPU check run: no GPU to name, no CUDA peak.
    path = tmp_path / "m.json"
    path.write_text(json.dumps(synthetic_doc(gpu_key=None, peak=False)))
    out = tmp_path / "out"
    assert costlaw(["calibrate", str(path), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "calibration.json: not written" in err and "--gpu" in err
    assert not (out / "calibration.json").exists()
    assert (out / "calibration.png").is_file() and (out / "measurements.csv").is_file()
    md = (out / "calibration.md").read_text()
    assert "no GPU key" in md and "| peak_bytes | - | - | skipped: 7 of 7 values are 0" in md
    # --gpu names the GPU the rates belong to.
    assert costlaw(["calibrate", str(path), "--out", str(out), "--gpu", "H200"]) == 0
    assert set(load_calibration(out / "calibration.json")) == {"H200"}


def test_verb_json_is_the_fits(measured, tmp_path, capsys):
    out = tmp_path / "out"
    capsys.readouterr()
    assert costlaw(["calibrate", str(measured["path"]), "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["gpu"] == "H100-SXM" and doc["written"]["calibration.json"] == str(out / "calibration.json")
    assert doc["rates"]["hybrid"]["decode"]["params"] == pytest.approx(
        measured["fits"]["rates"]["hybrid"]["decode"]["params"], rel=1e-9)


@pytest.mark.parametrize("setup, message", [
    (lambda p: p.write_text(json.dumps({"format": "nope"})), "format: expected 'costlaw-calibration-measurements/1'"),
    (lambda p: None, "measurements: no such file"),
    (lambda p: p.write_text("{not json"), "is not valid JSON"),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe"), "is not a text file"),
    (lambda p: p.write_text(json.dumps(synthetic_doc())), "--gpu: unknown GPU 'B9'"),
])
def test_verb_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, setup, message):
    path = tmp_path / "m.json"
    setup(path)
    extra = ["--gpu", "B9"] if "--gpu" in message else []
    assert costlaw(["calibrate", str(path), "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("costlaw calibrate: error: ") and message in err, err
    assert not (tmp_path / "o").exists()


def test_verb_out_is_a_file_is_one_line(measured, tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("x")
    assert costlaw(["calibrate", str(measured["path"]), "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out: " in err and "is a file" in err


def test_benchmark_on_cpu_feeds_the_analysis(tmp_path, capsys):
    """benchmarks/calibrate_infer_gpu.py's own CPU mode, end to end: its measurements load, every family's
    KV cache is measured exactly as costmodel prices it, and `costlaw calibrate` writes its table."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "calibrate_infer_gpu.py"
    spec = importlib.util.spec_from_file_location("calibrate_infer_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    meas = tmp_path / "m.json"
    assert bench.main(["--device", "cpu", "--contexts", "96,160", "--d-model", "64", "--layers", "3", "--heads",
                       "2", "--kv-heads", "1", "--vocab", "264", "--decode-tokens", "8", "--repeats", "1",
                       "--out", str(meas)]) == 0
    rows = cal.load_measurements(meas)["rows"]
    assert {r["family"] for r in rows} == {"gqa", "hybrid", "compressed"} and len(rows) == 6
    assert all(r["kv_bytes_measured"] == r["kv_bytes_analytic"] for r in rows)
    small = {r["family"]: r["kv_bytes_measured"] for r in rows if r["context"] == 160}
    assert small["compressed"] < small["gqa"]  # SnapKV keeps a quarter of the prompt
    assert costlaw(["calibrate", str(meas), "--out", str(tmp_path / "out")]) == 0
    assert "| compressed |" in (tmp_path / "out" / "calibration.md").read_text()



def test_benchmark_records_the_decode_step_it_asked_for(tmp_path, monkeypatch):
    """--decode-step compiled: GraphDecoder.compile_body is on while the benchmark measures (the graph decode runs
    on CUDA only, so here the rows are eager), every row says which step was asked for, and the class default
    comes back afterwards."""
    import importlib.util

    from costlaw.runs.models.decode_graph import GraphDecoder

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "calibrate_infer_gpu.py"
    spec = importlib.util.spec_from_file_location("calibrate_infer_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    seen, real = [], bench.measure
    monkeypatch.setattr(bench, "measure", lambda *a: seen.append(GraphDecoder.compile_body) or real(*a))
    meas = tmp_path / "m.json"
    assert bench.main(["--device", "cpu", "--contexts", "64", "--d-model", "64", "--layers", "1", "--heads",
                       "2", "--kv-heads", "1", "--vocab", "264", "--decode-tokens", "4", "--repeats", "1",
                       "--families", "gqa", "--decode-step", "compiled", "--out", str(meas)]) == 0
    doc = cal.load_measurements(meas)
    assert doc["decode_step"] == "compiled" and [r["decode_step"] for r in doc["rows"]] == ["compiled"]
    assert seen == [True] and GraphDecoder.compile_body is False
