"""The comparison's markdown: per pair, loss and retrieval, loss by position, speed vs ideal, KV cache bytes."""

from __future__ import annotations


def ctx_label(T: int) -> str:
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
    rows = [[f"val loss @ {ctx_label(T)} (nats/token)", _f(p["val_loss"]["dense"]), _f(p["val_loss"]["hybrid"]),
             _f(p["val_loss"]["delta"], "+.4f")]]
    for r in p["retrieval"]:
        rows.append([f"retrieval accuracy @ {ctx_label(r['context'])}, depth {r['depth']:g}",
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
    rows = [[f"train tokens/s (steady state) @ {ctx_label(T)}", _rate(tr["dense_tokens_per_s"]),
             _rate(tr["hybrid_tokens_per_s"]), _x(tr["measured"]), _x(tr["ideal"]) + " (C_train)",
             _pct(tr["share"])]]
    for inf in p["inference"]:
        c, pf, dc = ctx_label(inf["context"]), inf["prefill"], inf["decode"]
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
            rows.append([ctx_label(inf["context"]), name, _bytes(kv["measured"]),
                         _bytes(kv["analytic"]) + f" {kv['dtype']}", _f(kv["ratio"], ".4f"),
                         {True: "yes", False: "no", None: "n/a"}[kv["exact"]], _bytes(kv["peak_bytes"])])
    out.append(_table(["context", "run", "measured", "analytic (costmodel)", "measured / analytic", "exact",
                       "peak memory"], rows))
    ratios = "; ".join(f"{ctx_label(inf['context'])}: {_f(inf['kv']['hybrid_over_dense']['measured'], '.4f')} "
                       f"measured, {inf['kv']['hybrid_over_dense']['analytic']:.4f} analytic" for inf in p["inference"])
    out.append(f"Hybrid / dense KV bytes: {ratios}.\n")
    return "\n".join(out)


def render_markdown(result: dict) -> str:
    head = (f"# Dense vs hybrid extension\n\nFrom `{result['db']}`. Ideals from this checkout's costmodel: "
            "C_train and prefill FLOPs ratios, decode by C_infer and by bytes read per step (weights + KV cache at "
            f"{result['serve_dtype']}).\n")
    return "\n".join([head] + [_pair_markdown(i + 1, p) for i, p in enumerate(result["pairs"])])

