"""A recommendation as text, as table rows and as TOML files."""

from __future__ import annotations

from pathlib import Path

from costlaw.analysis.recommend.candidates import fit_status_line
from costlaw.costmodel.core.files import write_atomic
from costlaw.costmodel.core.units import binary_bytes, si, table


def write_tomls(rec, path) -> list[Path]:
    """The winner's TOML at each context: `path` for one context, `<stem>-<T><suffix>` for several."""

    p = Path(path)
    out = []
    for T in rec.contexts:
        w = rec.winner(T)
        if w is None:
            continue
        target = p if len(rec.contexts) == 1 else p.with_name(f"{p.stem}-{T}{p.suffix or '.toml'}")
        write_atomic(target, toml_text(rec, T))
        out.append(target)
    return out


def toml_text(rec, T: int) -> str:
    w = rec.winner(T)
    head = [f"# costlaw recommend: {w.label} at context {T}, target loss {rec.target:g}",
            f"# predicted loss {w.predicted:.4g} at N {w.shape.n_params:,} (N* {w.n_star:,.0f}); {w.interval.text()}"]
    if w.cand.base:
        head.append(f"# loss = {w.cand.base}'s law + ΔNLL {w.cand.delta_at(w.shape.n_params):+.4g} at this N "
                    f"({w.cand.delta_source})")
    return "\n".join(head) + "\n" + w.shape.config.to_toml()


def _pct(x) -> str:
    return "-" if x is None else f"{-100 * x:+.1f}%"


def render_text(rec) -> str:
    """The human form: per context the winner, its config, savings vs the standard, then the table."""
    obj = rec.objective.describe()
    lines = [f"target loss {rec.target:g} at context {', '.join(str(T) for T in rec.contexts)}",
             f"source: {rec.source}"]
    if fit_status_line(rec.fits):
        lines.append(fit_status_line(rec.fits))
    lines.append(f"objective: {obj['z']} (M = {obj['M']}, C = {obj['C']})")
    for k in ("memory_budget", "flops_budget", "latency_target_ms"):
        if k in obj:
            lines.append(f"budget {k.removesuffix('_budget')}: {obj[k]:.4g}")
    if "latency_model" in obj:
        lines.append(f"latency on {obj['gpu']}: {obj['latency_model']}")
    doc = rec.to_json()
    lines.append(doc["shape_rule"])
    lines.append(doc["intervals"])
    lines.append("guards: " + doc["guards"])
    lines.append(rec.standard_note)
    lines += [f"note: {n}" for n in rec.notes]
    compressed = [r for r in rec.rows if r.cand.base and r.status == "ok"]
    if compressed:
        lines.append("compressed candidates: predicted loss = the dense candidate's law + the ΔNLL its KV policy "
                     "measured at that keep ratio")
    printed = set()
    for T in rec.contexts:
        w, ru = rec.winner(T), rec.runner_up(T)
        lines.append("")
        if w is None:
            lines.append(f"== context {T}: no winner: {rec.no_winner_reason(T)}")
        else:
            p = w.prices[T]
            ext = f"{w.extrapolation:.2f}x the largest trained N" if w.extrapolation else "largest trained N unknown"
            lines.append(f"== context {T}: winner {w.label}" + (f"   runner-up {ru.label}" if ru else ""))
            lines.append(f"   predicted loss {w.predicted:.4g} at N {si(w.shape.n_params)} (N* {si(w.n_star)}, {ext})")
            lines.append(f"   {w.interval.text()}")
            if w.cand.noise is not None:
                lines.append(f"   run-to-run noise: {w.cand.noise.describe()}")
            if w.cand.base:
                lines.append(f"   = {w.cand.base}'s law + ΔNLL {w.cand.delta_at(w.shape.n_params):+.4g} at this N "
                             f"({w.cand.delta_source})")
            latency = f", decode {p['decode_ms']:.3g} ms/token ({p['latency_model']})" if "decode_ms" in p else ""
            lines.append(f"   M_infer {binary_bytes(p['m_infer_bytes'])}, C_infer {si(p['c_infer_flops_per_token'])}"
                         f"FLOP/token, Z {p['z']:.4g}{latency}")
            s = rec.savings(T)
            if s is not None:
                sp = rec.standard.prices[T]
                lines.append(f"   vs standard {rec.standard.label} (N {si(rec.standard.shape.n_params)}): M_infer "
                             f"{binary_bytes(sp['m_infer_bytes'])} -> {_pct(s['memory'])}, C_infer "
                             f"{si(sp['c_infer_flops_per_token'])}FLOP/token -> {_pct(s['flops'])}")
            for warn in rec.warnings():
                if warn.startswith(f"context {T}:"):
                    lines.append(f"   WARNING: {warn.split(': ', 1)[1]}")
            if w.shape.config.config_id not in printed:
                printed.add(w.shape.config.config_id)
                lines.append("")
                lines += ["   " + x for x in toml_text(rec, T).rstrip().splitlines()]
        lines.append("")
        lines.append(table(candidate_rows(rec, T)))
    return "\n".join(lines)


def candidate_rows(rec, T: int) -> list[dict]:
    ranked = {r.label: i + 1 for i, r in enumerate(rec.ranked(T))}
    rows = []
    pct = f"{100 * rec.level:g}%"
    order = sorted(rec.rows, key=lambda r: (r.status != "ok", r.label not in ranked,
                                            r.prices[T]["z"] if r.status == "ok" else 0, r.label))
    for r in order:
        row = {"rank": ranked.get(r.label), "candidate": r.label, "family": r.cand.family}
        if r.status == "ok":
            p, c = r.prices[T], r.shape.config
            b = r.interval.bounds
            notes = [f"over {v}" for v in p["violations"]]
            blocked = r.blocked(rec.allow_weak, rec.allow_outside)
            if blocked:
                notes.append(f"excluded: {blocked}")
            elif r.weak:
                notes.append(f"weak law, allowed: {'; '.join(r.weak)}")
            if r.outside and not blocked:
                notes.append(f"outside, allowed: {r.outside}")
            row.update({"N*": si(r.n_star), "L x d": f"{c.n_layers}x{c.d_model}", "loss": round(r.predicted, 4),
                        f"{pct} new run": (f"{b[0]:.4g}-{b[1]:.4g}" + ("" if r.interval.kind == "prediction"
                                                                       else " (mean)")) if b else "-",
                        "extrap": f"{r.extrapolation:.2g}x" if r.extrapolation else "-",
                        "M_infer": binary_bytes(p["m_infer_bytes"]), "C_infer": si(p["c_infer_flops_per_token"]),
                        "Z": f"{p['z']:.4g}", "note": "; ".join(notes)})
        else:
            row["note"] = f"{r.status}: {r.reason}"
        rows.append(row)
    cols = ["rank", "candidate", "family", "N*", "L x d", "loss", f"{pct} new run", "extrap", "M_infer", "C_infer",
            "Z", "note"]
    return [{k: row.get(k) for k in cols} for row in rows]
