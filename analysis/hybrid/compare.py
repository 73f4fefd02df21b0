"""One dense/hybrid pair measured against each other and against costmodel's ideal speedups."""

from __future__ import annotations

from costlaw.analysis.hybrid.pairing import hybrid_extensions, load, twin
from costlaw.costmodel import ModelConfig, c_infer, c_train, kv_cache_bytes, params_total, prefill_flops
from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.costs import dtype_bytes

FORMAT = "costlaw-hybrid/1"
SERVE_DTYPE = "bf16"  # the dtype the bandwidth-bound decode ideal prices weights and cache in


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
    """Each completed hybrid extension in the store next to its dense twin (see the package doc)."""
    runs, evals = load(db_path)
    hybrids = hybrid_extensions(runs)
    if not hybrids:
        raise CostlawError(f"--db: {db_path} has no completed hybrid run started from another run (base_run_id); "
                           "ingest the extend stage of a hybrid-extension sweep first")
    pairs = []
    for h in hybrids:
        d = twin(h, runs)
        pairs.append(_pair(d, h, runs.get(h["base_run_id"]), evals.get(d["run_id"], []), evals.get(h["run_id"], [])))
    return {"format": FORMAT, "db": str(db_path), "serve_dtype": SERVE_DTYPE, "pairs": pairs}
