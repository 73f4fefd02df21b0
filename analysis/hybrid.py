"""A dense and a hybrid extension of the same checkpoint, side by side (LongGen's comparison, from the store).

    python -m analysis.hybrid RESULTS.duckdb --out DIR

Pairs. Every completed hybrid run that was started from another run (`base_run_id`) is paired with its dense
twin: the completed run with the same base_run_id, the same seq_len and every layer full (no KV policy), the
same model otherwise. Several twins are narrowed to the hybrid's seed; a hybrid without exactly one twin is
an error, since the comparison only means something when both extensions started from the same weights.

Per pair: validation loss at the training length, loss by position bucket, passkey retrieval by depth, and
speed next to what the cost model says the sparsity should buy, each from this checkout's `costmodel`:
- train: steady-state tokens/s (hybrid / dense) vs c_train(dense, T) / c_train(hybrid, T);
- prefill: dense prefill_s / hybrid prefill_s vs the ratio of prefill_flops over the prompt the eval prefilled
  (`prefill_tokens` = context - decode tokens);
- decode: hybrid tokens/s / dense vs the ratio of c_infer at the context (the FLOP-bound ideal) and vs the
  ratio of bytes a batch-1 step reads, weights + KV cache at bf16 (the bandwidth-bound ideal);
- share of ideal = measured / ideal speedup.
KV cache bytes measured are checked against costmodel.kv_cache_bytes at the cache's dtype (bf16 on a GPU,
fp32 on CPU: docs/run-directory.md).

DIR gets hybrid.json (the numbers), hybrid.md (the tables) and hybrid.png + hybrid.svg (the figure).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from costlaw.costmodel import ModelConfig, c_infer, c_train, kv_cache_bytes, params_total, prefill_flops
from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.files import write_atomic
from costlaw.costmodel.costs import dtype_bytes

EVALS = ("val_loss", "position_loss", "retrieval", "inference")
RUN_COLUMNS = ("run_id", "stage", "status", "base_run_id", "seq_len", "seed", "gpu", "device", "val_loss", "tokens",
               "tokens_per_s", "tokens_per_s_wall", "train_s", "compile_s", "wall_s", "mfu", "config_json")
SERVE_DTYPE = "bf16"  # the dtype the bandwidth-bound decode ideal prices weights and cache in


# ---------------------------------------------------------------- reading the store
def _load(db) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """Every run (by id, with its ModelConfig under "cfg") and its evals parsed into {eval, tags, metrics}."""
    from costlaw.analysis.store import query_rows

    cols, rows = query_rows(db, f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY run_id")
    runs = {}
    for row in rows:
        r = dict(zip(cols, row))
        doc = json.loads(r.pop("config_json") or "{}")
        model = (doc.get("config") or {}).get("model")
        r["cfg"] = ModelConfig.from_dict(model) if model else None
        runs[r["run_id"]] = r
    cols, rows = query_rows(db, "SELECT run_id, eval, tags, metric, value FROM evals WHERE eval IN ("
                            + ", ".join(f"'{e}'" for e in EVALS) + ") ORDER BY run_id, eval, tags, metric")
    grouped: dict[tuple, dict] = {}
    for run_id, name, tags, metric, value in rows:
        e = grouped.setdefault((run_id, name, tags), {"eval": name, "tags": json.loads(tags), "metrics": {}})
        e["metrics"][metric] = value
    evals: dict[str, list[dict]] = {}
    for (run_id, _, _), e in grouped.items():
        evals.setdefault(run_id, []).append(e)
    return runs, evals


def _is_dense(cfg: ModelConfig | None) -> bool:
    return cfg is not None and cfg.family == "gqa"


def _twin(hybrid: dict, runs: dict[str, dict]) -> dict:
    h = hybrid["cfg"]
    found = [r for r in runs.values() if r["status"] == "completed" and r["base_run_id"] == hybrid["base_run_id"]
             and r["seq_len"] == hybrid["seq_len"] and _is_dense(r["cfg"])]
    if len(found) > 1:
        found = [r for r in found if r["seed"] == hybrid["seed"]]
    if not found:
        raise CostlawError(f"hybrid run {hybrid['run_id']}: no dense twin found (a completed run with base_run_id "
                           f"{hybrid['base_run_id']}, seq_len {hybrid['seq_len']} and all {h.n_layers} layers full); "
                           "ingest the dense extension of the same checkpoint")
    if len(found) > 1:
        raise CostlawError(f"hybrid run {hybrid['run_id']}: {len(found)} dense twins with seed {hybrid['seed']} "
                           f"({', '.join(r['run_id'] for r in found)}); keep one per base run and seed in the store")
    dense = found[0]
    if dense["cfg"].with_layout(()) != h.with_layout(()):
        raise CostlawError(f"hybrid run {hybrid['run_id']}: its dense twin {dense['run_id']} differs in more than "
                           "the attention layout; pair extensions of one model only")
    return dense


# ---------------------------------------------------------------- helpers
def _ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def _speed(measured: float | None, ideal: float | None) -> dict:
    return {"measured": measured, "ideal": ideal, "share": _ratio(measured, ideal)}


def _by(evals: list[dict], name: str, *keys: str) -> dict[tuple, dict]:
    return {tuple(e["tags"].get(k) for k in keys): e for e in evals if e["eval"] == name}


def _cache_dtype(device: str | None) -> str:
    # runs/evaluate.py serves a bf16 copy on a GPU and the fp32 model on CPU, and the cache takes that dtype
    return SERVE_DTYPE if device == "cuda" else "fp32"


def _int(v) -> int | None:
    return int(v) if v is not None else None


def _label(cfg: ModelConfig) -> str:
    sparse = ", ".join(s.spec() for s in cfg.sparse_patterns)
    return f"{cfg.n_full_layers}/{cfg.n_layers} full" + (f", rest {sparse}" if sparse else "")


def _run_info(r: dict) -> dict:
    cfg = r["cfg"]
    return {"run_id": r["run_id"], "stage": r["stage"], "seq_len": r["seq_len"], "seed": r["seed"],
            "family": cfg.family, "label": _label(cfg), "layout": [s.spec() for s in cfg.layout],
            "n_layers": cfg.n_layers, "n_full_layers": cfg.n_full_layers, "params_total": params_total(cfg),
            "gpu": r["gpu"], "device": r["device"], "tokens": r["tokens"], "val_loss": r["val_loss"],
            "tokens_per_s": r["tokens_per_s"], "tokens_per_s_wall": r["tokens_per_s_wall"], "train_s": r["train_s"],
            "compile_s": r["compile_s"], "wall_s": r["wall_s"], "mfu": r["mfu"]}


# ---------------------------------------------------------------- one pair
def _pair(dense: dict, hybrid: dict, base: dict | None, ev_d: list[dict], ev_h: list[dict]) -> dict:
    cd, ch = dense["cfg"], hybrid["cfg"]
    T = hybrid["seq_len"]
    if dense["gpu"] != hybrid["gpu"]:  # a speedup across two devices says nothing about the layout
        raise CostlawError(f"runs {dense['run_id']} and {hybrid['run_id']}: measured on different devices "
                           f"({dense['gpu']} vs {hybrid['gpu']}); compare runs from one GPU type")
    vd, vh = _by(ev_d, "val_loss", "context"), _by(ev_h, "val_loss", "context")
    val = {"context": T, "dense": (vd.get((T,)) or {}).get("metrics", {}).get("loss", dense["val_loss"]),
           "hybrid": (vh.get((T,)) or {}).get("metrics", {}).get("loss", hybrid["val_loss"])}
    val["delta"] = val["hybrid"] - val["dense"] if None not in (val["dense"], val["hybrid"]) else None

    pd_, ph = _by(ev_d, "position_loss", "context", "bucket"), _by(ev_h, "position_loss", "context", "bucket")
    position = []
    for key in sorted(k for k in pd_.keys() & ph.keys() if k[0] == T):
        a, b = pd_[key], ph[key]
        if (a["tags"].get("start"), a["tags"].get("end")) != (b["tags"].get("start"), b["tags"].get("end")):
            raise CostlawError(f"runs {dense['run_id']} and {hybrid['run_id']}: position bucket {key[1]} spans "
                               "different positions; evaluate both with the same eval.position_buckets")
        ld, lh = a["metrics"].get("loss"), b["metrics"].get("loss")
        position.append({"bucket": key[1], "start": a["tags"].get("start"), "end": a["tags"].get("end"),
                         "dense": ld, "hybrid": lh, "delta": lh - ld if None not in (ld, lh) else None})

    rd, rh = _by(ev_d, "retrieval", "context", "depth"), _by(ev_h, "retrieval", "context", "depth")
    retrieval = [{"context": k[0], "depth": k[1], "dense": rd[k]["metrics"].get("accuracy"),
                  "hybrid": rh[k]["metrics"].get("accuracy"), "samples_dense": _int(rd[k]["metrics"].get("samples")),
                  "samples_hybrid": _int(rh[k]["metrics"].get("samples"))}
                 for k in sorted(rd.keys() & rh.keys())]

    ctd, cth = c_train(cd, T), c_train(ch, T)
    train = {"context": T, "dense_tokens_per_s": dense["tokens_per_s"], "hybrid_tokens_per_s": hybrid["tokens_per_s"],
             "c_train_dense": ctd, "c_train_hybrid": cth,
             **_speed(_ratio(hybrid["tokens_per_s"], dense["tokens_per_s"]), ctd / cth)}

    idd, idh = _by(ev_d, "inference", "context", "batch"), _by(ev_h, "inference", "context", "batch")
    common = sorted(k for k in idd.keys() & idh.keys() if k[1] == 1)
    if not common:
        raise CostlawError(f"runs {dense['run_id']} and {hybrid['run_id']}: no batch-1 inference eval at a context "
                           "both have; evaluate both with the same eval.contexts")
    wb = dtype_bytes(SERVE_DTYPE)
    inference = []
    for ctx, _ in common:
        md, mh = idd[(ctx, 1)]["metrics"], idh[(ctx, 1)]["metrics"]
        # prefill_s times only the prompt (context - decode tokens); decode then fills the cache to the context
        prompt = _int(md.get("prefill_tokens")) or ctx
        if prompt != (_int(mh.get("prefill_tokens")) or ctx):
            raise CostlawError(f"runs {dense['run_id']} and {hybrid['run_id']}: inference at context {ctx} prefilled "
                               "different prompt lengths; evaluate both with the same eval.decode_tokens")
        pfd, pfh = prefill_flops(cd, prompt), prefill_flops(ch, prompt)
        cid, cih = c_infer(cd, ctx), c_infer(ch, ctx)
        bd = params_total(cd) * wb + kv_cache_bytes(cd, ctx, SERVE_DTYPE)
        bh = params_total(ch) * wb + kv_cache_bytes(ch, ctx, SERVE_DTYPE)
        dec = _ratio(mh.get("decode_tokens_per_s"), md.get("decode_tokens_per_s"))
        kv = {}
        for name, run, cfg, m in (("dense", dense, cd, md), ("hybrid", hybrid, ch, mh)):
            dt = _cache_dtype(run["device"])
            analytic = kv_cache_bytes(cfg, ctx, dt)
            measured = _int(m.get("kv_bytes"))
            kv[name] = {"measured": measured, "analytic": analytic, "analytic_stored": _int(m.get("kv_bytes_analytic")),
                        "dtype": dt, "ratio": _ratio(measured, analytic),
                        "exact": measured == analytic if measured is not None else None,
                        "peak_bytes": _int(m.get("peak_bytes"))}
        kv["hybrid_over_dense"] = {"measured": _ratio(kv["hybrid"]["measured"], kv["dense"]["measured"]),
                                   "analytic": kv["hybrid"]["analytic"] / kv["dense"]["analytic"]}
        inference.append({
            "context": ctx, "prefill_tokens": prompt,
            "prefill": {"dense_s": md.get("prefill_s"), "hybrid_s": mh.get("prefill_s"), "flops_dense": pfd,
                        "flops_hybrid": pfh, **_speed(_ratio(md.get("prefill_s"), mh.get("prefill_s")), pfd / pfh)},
            "decode": {"dense_tokens_per_s": md.get("decode_tokens_per_s"),
                       "hybrid_tokens_per_s": mh.get("decode_tokens_per_s"), "measured": dec,
                       "c_infer_dense": cid, "c_infer_hybrid": cih, "bytes_dense": bd, "bytes_hybrid": bh,
                       "ideal_flops": cid / cih, "ideal_bytes": bd / bh, "share_flops": _ratio(dec, cid / cih),
                       "share_bytes": _ratio(dec, bd / bh)},
            "kv": kv})

    return {"base_run_id": hybrid["base_run_id"], "seq_len": T, "gpu": hybrid["gpu"],
            "base": ({"run_id": base["run_id"], "seq_len": base["seq_len"], "val_loss": base["val_loss"]}
                     if base else None),
            "dense": _run_info(dense), "hybrid": _run_info(hybrid), "val_loss": val, "position_loss": position,
            "retrieval": retrieval, "train": train, "inference": inference}


def compare(db_path) -> dict:
    """Each completed hybrid extension in the store next to its dense twin (see the module doc)."""
    runs, evals = _load(db_path)
    hybrids = [r for r in runs.values() if r["status"] == "completed" and r["base_run_id"] and r["cfg"] is not None
               and r["cfg"].family == "hybrid"]
    if not hybrids:
        raise CostlawError(f"--db: {db_path} has no completed hybrid run started from another run (base_run_id); "
                           "ingest the extend stage of a hybrid-extension sweep first")
    pairs = []
    for h in sorted(hybrids, key=lambda r: (r["base_run_id"], r["seq_len"], r["run_id"])):
        d = _twin(h, runs)
        pairs.append(_pair(d, h, runs.get(h["base_run_id"]), evals.get(d["run_id"], []), evals.get(h["run_id"], [])))
    return {"format": "costlaw-hybrid/1", "db": str(db_path), "serve_dtype": SERVE_DTYPE, "pairs": pairs}


# ---------------------------------------------------------------- markdown
def _ctx(T: int) -> str:
    return f"{T // 1024}K" if T and T % 1024 == 0 else str(T)


def _f(v, fmt: str = ".4f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _x(v) -> str:
    return "n/a" if v is None else f"{v:.2f}×"


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.0f}%"


def _rate(v) -> str:
    from costlaw.costmodel.core.units import si

    return "n/a" if v is None else si(v)


def _ms(v) -> str:
    return "n/a" if v is None else f"{1e3 * v:.2f} ms"


def _bytes(v) -> str:
    from costlaw.costmodel.core.units import binary_bytes

    return "n/a" if v is None else f"{v:,} ({binary_bytes(v)})"


def _acc(accuracy, samples) -> str:
    """Accuracy with the passes it counts (accuracy x samples is a whole number of passkeys)."""
    if accuracy is None:
        return "n/a"
    return f"{accuracy:.4f}" + (f" ({round(accuracy * samples)}/{samples})" if samples else "")


def _span(b: dict) -> str:
    return "n/a" if None in (b["start"], b["end"]) else f"{b['start']:,}–{b['end']:,}"


def _table(head: list[str], rows: list[list[str]]) -> str:
    right = ["---:" if i else "---" for i in range(len(head))]
    return "\n".join("| " + " | ".join(r) + " |" for r in [head, right, *rows]) + "\n"


def _pair_markdown(i: int, p: dict) -> str:
    d, h, T = p["dense"], p["hybrid"], p["seq_len"]
    out = [f"## Pair {i}: hybrid `{h['run_id']}` vs dense `{d['run_id']}` (T = {T:,})\n",
           f"Both extended from `{p['base_run_id']}`"
           + (f" (stage pretrain at T = {p['base']['seq_len']:,}, val loss {_f(p['base']['val_loss'])})"
              if p["base"] else "")
           + f" on {p['gpu'] or 'an unknown device'}. Dense: {d['label']}. Hybrid: {h['label']} "
           f"(layers: {', '.join(h['layout'])}).\n"]

    out.append("### Loss and retrieval\n")
    rows = [[f"val loss @ {_ctx(T)} (nats/token)", _f(p["val_loss"]["dense"]), _f(p["val_loss"]["hybrid"]),
             _f(p["val_loss"]["delta"], "+.4f")]]
    for r in p["retrieval"]:
        rows.append([f"retrieval accuracy @ {_ctx(r['context'])}, depth {r['depth']:g}",
                     _acc(r["dense"], r["samples_dense"]), _acc(r["hybrid"], r["samples_hybrid"]),
                     _f(r["hybrid"] - r["dense"] if None not in (r["dense"], r["hybrid"]) else None, "+.4f")])
    out.append(_table(["metric", "dense", "hybrid", "hybrid − dense"], rows))

    if p["position_loss"]:
        out.append(f"### Loss by position (T = {T:,}, nats/token)\n")
        out.append(_table(["bucket", "positions", "dense", "hybrid", "hybrid − dense"],
                          [[str(b["bucket"]), _span(b), _f(b["dense"]), _f(b["hybrid"]),
                            _f(b["delta"], "+.4f")] for b in p["position_loss"]]))

    out.append("### Speed vs the cost model's ideal\n")
    tr = p["train"]
    rows = [[f"train tokens/s (steady state) @ {_ctx(T)}", _rate(tr["dense_tokens_per_s"]),
             _rate(tr["hybrid_tokens_per_s"]), _x(tr["measured"]), _x(tr["ideal"]) + " (C_train)",
             _pct(tr["share"])]]
    for inf in p["inference"]:
        c, pf, dc = _ctx(inf["context"]), inf["prefill"], inf["decode"]
        rows.append([f"prefill {inf['prefill_tokens']:,} tokens @ {c}", _ms(pf["dense_s"]), _ms(pf["hybrid_s"]),
                     _x(pf["measured"]), _x(pf["ideal"]) + " (prefill FLOPs)", _pct(pf["share"])])
        rows.append([f"decode tokens/s @ {c}", _f(dc["dense_tokens_per_s"], ".1f"),
                     _f(dc["hybrid_tokens_per_s"], ".1f"), _x(dc["measured"]), _x(dc["ideal_flops"]) + " (C_infer)",
                     _pct(dc["share_flops"])])
        rows.append([f"decode tokens/s @ {c}", "", "", "", _x(dc["ideal_bytes"]) + " (weights + KV bytes)",
                     _pct(dc["share_bytes"])])
    out.append(_table(["what", "dense", "hybrid", "measured speedup", "ideal speedup", "share of ideal"], rows))
    out.append("Speedup is hybrid over dense (time: dense / hybrid; throughput: hybrid / dense); share of ideal = "
               "measured / ideal.\n")
    out.append(_table(["run time", "dense", "hybrid"],
                      [[name, _f(d[k], ".1f"), _f(h[k], ".1f")] for name, k in
                       (("compile s (first step)", "compile_s"), ("train s (inside steps)", "train_s"),
                        ("wall s (whole run, evals included)", "wall_s"))]
                      + [["MFU", _f(d["mfu"], ".3f"), _f(h["mfu"], ".3f")]]))

    out.append("### KV cache bytes (batch 1)\n")
    rows = []
    for inf in p["inference"]:
        for name in ("dense", "hybrid"):
            kv = inf["kv"][name]
            rows.append([_ctx(inf["context"]), name, _bytes(kv["measured"]), _bytes(kv["analytic"]) + f" {kv['dtype']}",
                         _f(kv["ratio"], ".4f"), {True: "yes", False: "no", None: "n/a"}[kv["exact"]],
                         _bytes(kv["peak_bytes"])])
    out.append(_table(["context", "run", "measured", "analytic (costmodel)", "measured / analytic", "exact",
                       "peak memory"], rows))
    ratios = "; ".join(f"{_ctx(inf['context'])}: {_f(inf['kv']['hybrid_over_dense']['measured'], '.4f')} measured, "
                       f"{inf['kv']['hybrid_over_dense']['analytic']:.4f} analytic" for inf in p["inference"])
    out.append(f"Hybrid / dense KV bytes: {ratios}.\n")
    return "\n".join(out)


def render_markdown(result: dict) -> str:
    head = (f"# Dense vs hybrid extension\n\nFrom `{result['db']}`. Ideals from this checkout's costmodel: "
            "C_train and prefill FLOPs ratios, decode by C_infer and by bytes read per step (weights + KV cache at "
            f"{result['serve_dtype']}).\n")
    return "\n".join([head] + [_pair_markdown(i + 1, p) for i, p in enumerate(result["pairs"])])


# ---------------------------------------------------------------- figure
def _speed_bars(p: dict) -> list[tuple[str, float | None, float | None, float | None]]:
    """(label, measured, ideal by FLOPs, ideal by bytes) per bar group."""
    bars = [(f"train\n{_ctx(p['seq_len'])}", p["train"]["measured"], p["train"]["ideal"], None)]
    bars += [(f"prefill\n{_ctx(i['context'])}", i["prefill"]["measured"], i["prefill"]["ideal"], None)
             for i in p["inference"]]
    bars += [(f"decode\n{_ctx(i['context'])}", i["decode"]["measured"], i["decode"]["ideal_flops"],
              i["decode"]["ideal_bytes"]) for i in p["inference"]]
    return bars


def figure(result: dict, path) -> list[Path]:
    """Per pair: loss by position (dense vs hybrid), its difference, and measured vs ideal speedups.
    Writes PNG and SVG (analysis.figures.style.save); returns both paths."""
    from costlaw.analysis.figures.style import colour, marker, new_figure, no_data, save, style

    pairs = result["pairs"]
    if not pairs:
        no_data("hybrid", "no dense/hybrid pair", "ingest a dense and a hybrid extension of one run")
    with style():
        fig, _ = new_figure(13.0, 4.2 * len(pairs), ncols=0)
        for row, p in enumerate(pairs):
            a_pos, a_delta, a_speed = (fig.add_subplot(len(pairs), 3, 3 * row + k + 1) for k in range(3))
            tag = f" ({p['hybrid']['run_id'][:8]})" if len(pairs) > 1 else ""
            buckets = [b for b in p["position_loss"] if None not in (b["dense"], b["hybrid"], b["start"], b["end"])]
            mids = [(b["start"] + b["end"]) / 2 for b in buckets]
            width = (buckets[0]["end"] - buckets[0]["start"]) * 0.8 if buckets else 1.0
            for i, name in enumerate(("dense", "hybrid")):
                a_pos.plot(mids, [b[name] for b in buckets], color=colour(i), marker=marker(i),
                           label=f"{name}: {p[name]['label']}")
            a_pos.set_xlabel("position in the context (tokens, bucket midpoint)")
            a_pos.set_ylabel("validation loss (nats/token)")
            a_pos.set_title(f"Loss by position, T = {_ctx(p['seq_len'])}{tag}")
            a_pos.legend(fontsize=8)
            a_delta.bar(mids, [b["delta"] for b in buckets], width=width, color=colour(1))
            a_delta.axhline(0, color="black", linewidth=0.8)
            if buckets:
                edges = [b["start"] for b in buckets] + [buckets[-1]["end"]]
                edges = edges[:: max(1, len(edges) // 9)]
                for ax in (a_pos, a_delta):
                    ax.set_xticks(edges)
                    ax.set_xticklabels([_ctx(int(e)) for e in edges])
            a_delta.set_xlabel("position in the context (tokens, bucket midpoint)")
            a_delta.set_ylabel("hybrid − dense loss (nats/token)")
            a_delta.set_title("Loss difference by position")

            bars = _speed_bars(p)
            w = 0.27
            for k, (name, hatch) in enumerate((("measured", None), ("ideal: FLOPs", "//"), ("ideal: bytes", ".."))):
                xs = [j + (k - 1) * w for j, b in enumerate(bars) if b[k + 1] is not None]
                ys = [b[k + 1] for b in bars if b[k + 1] is not None]
                rects = a_speed.bar(xs, ys, width=w, color=colour(k), hatch=hatch, edgecolor="white",
                                    label=name)
                a_speed.bar_label(rects, labels=[f"{y:.2f}" for y in ys], fontsize=7, padding=1)
            a_speed.axhline(1, color="black", linewidth=0.8)
            a_speed.set_xticks(range(len(bars)))
            a_speed.set_xticklabels([b[0] for b in bars])
            a_speed.set_ylabel("hybrid speedup over dense (×)")
            a_speed.set_title("Measured vs ideal speedup")
            a_speed.legend(fontsize=8)
        return save(fig, path)


# ---------------------------------------------------------------- CLI
def write_outputs(db, out) -> list[Path]:
    """compare(db), then DIR/hybrid.json, hybrid.md and hybrid.png + .svg; returns the paths written."""
    result = compare(db)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "hybrid.json", json.dumps(result, indent=2) + "\n")
    write_atomic(out / "hybrid.md", render_markdown(result))
    return [out / "hybrid.json", out / "hybrid.md", *figure(result, out / "hybrid.png")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.hybrid", description=__doc__.split("\n")[0])
    ap.add_argument("db", help="a results file written by costlaw ingest")
    ap.add_argument("--out", required=True, help="directory for hybrid.md, hybrid.json and hybrid.png (+ .svg)")
    args = ap.parse_args(argv)
    try:
        written = write_outputs(args.db, args.out)
    except CostlawError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        return 2
    for p in written:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
