"""figures/gqa-depth.png: (1,1) and (8,8) loss against N, the gqa-heads-steps ladder (seed 0, L 4-6) beside this
study's deeper d 192 and d 256 runs, with each candidate's seed-0 law L(N) fitted to the ladder alone.

    python studies/gqa-depth/figure.py
"""

import json
from pathlib import Path

import duckdb
import numpy as np

from costlaw.analysis.figures.style import (
    AXES,
    colour,
    loss_label,
    loss_unit,
    marker,
    new_figure,
    plain_log_ticks,
    save_as,
    style,
)
from costlaw.fitting import get_law

ROOT = Path(__file__).resolve().parents[2]
LADDER = ROOT / "studies/gqa-heads-steps"
QUERY = """select n_heads, d_model, n_layers, params_non_embedding as N, val_loss as loss, tokenizer, src from (
  select *, 'ladder' as src from l.runs where seed = 0 and d_model <= 384
  union all by name select *, 'deeper' as src from d.runs) where n_heads = n_kv_heads order by N"""


def main() -> None:
    con = duckdb.connect()
    con.execute(f"attach '{LADDER / 'results.duckdb'}' as l (read_only)")
    con.execute(f"attach '{Path(__file__).parent / 'results.duckdb'}' as d (read_only)")
    df = con.execute(QUERY).df()
    seed0 = json.loads((LADDER / "fits-seed0.json").read_text())["candidates"]  # the fits format costlaw-fits/1
    fits = {f["group"]["n_heads"]: f["params"] for f in seed0 if f["group"]["n_heads"] == f["group"]["n_kv_heads"]}
    with style():
        fig, axes = new_figure(11, 4.8, ncols=2)
        axes[1].sharey(axes[0])
        for ax, h in zip(axes, (1, 8)):
            g, p = df[df.n_heads == h], fits[h]
            n = np.geomspace(g.N.min() / 1.2, g.N.max() * 1.2, 200)
            ax.plot(n, get_law("gqa-size").predict(p, n), color="0.5", label="seed-0 law, ladder d 128-640")
            for i, L in enumerate((4, 5, 6)):
                for src, fill in (("ladder", "full"), ("deeper", "none")):
                    s = g[(g.n_layers == L) & (g.src == src)]
                    name = f"L {L}, {'ladder' if src == 'ladder' else 'gqa-depth'}"
                    ax.plot(s.N, s.loss, linestyle="none", color=colour(i), marker=marker(i), fillstyle=fill,
                            zorder=3, label=name if len(s) else None)
                    for _, r in s.iterrows():
                        ax.annotate(f"d{r.d_model}", (r.N, r.loss), textcoords="offset points", xytext=(5, 3),
                                    fontsize=8)
            heads = f"{h} head{'s' if h > 1 else ''} of 64 per layer"
            ax.set(xscale="log", xlabel=f"{AXES['N']} (log scale)", title=f"({h},{h}): {heads}")
            plain_log_ticks(ax, si=True)
            ax.legend()
        axes[0].set_ylabel(loss_label("validation", loss_unit(df.tokenizer)))
        fig.suptitle("Depth at a fixed width: the ladder's L 4 points against L 5 and 6 (seed 0, T 2048, "
                     "20 tokens/param)")
        save_as(fig, ROOT / "figures/gqa-depth.png")

if __name__ == "__main__":
    main()
