"""figures/gqa-knee.png: validation loss against tokens per parameter for (1,1) and (8,8) at d 192 L 3 and d 256 L 4,
this study's 40 x N and 80 x N runs beside the ladder's own 20 x N runs of the same configs and seeds
(gqa-aspect for d 192 L 3, gqa-heads-steps for d 256 L 4).

    python studies/gqa-knee/figure.py
"""

from pathlib import Path

import duckdb

from costlaw.analysis.figures.style import AXES, colour, loss_label, loss_unit, marker, new_figure, save_as, style

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = "n_heads, d_model, n_layers, seed, tokens / params_non_embedding as tpp, val_loss as loss, tokenizer"
KEEP = "n_heads = n_kv_heads and n_heads in (1, 8) and seed in (1, 2)"
QUERY = f"""select * from (
  select {COLUMNS} from k.runs
  union all select {COLUMNS} from a.runs where {KEEP} and d_model = 192
  union all select {COLUMNS} from s.runs where {KEEP} and d_model = 256)
where (n_heads = 1 or seed = 1) order by n_heads, d_model, seed, tpp"""


def main() -> None:
    con = duckdb.connect()
    for alias, study in (("k", "gqa-knee"), ("a", "gqa-aspect"), ("s", "gqa-heads-steps")):
        con.execute(f"attach '{ROOT / 'studies' / study / 'results.duckdb'}' as {alias} (read_only)")
    df = con.execute(QUERY).df()
    with style():
        fig, (ax,) = new_figure(7.5, 4.8)
        keys = [(1, 192), (1, 256), (8, 192), (8, 256)]
        for (h, d, L, seed), g in df.groupby(["n_heads", "d_model", "n_layers", "seed"]):
            i = keys.index((h, d))
            ax.plot(g.tpp, g.loss, marker=marker(i), linestyle="-" if seed == 1 else "--", color=colour(i),
                    fillstyle="full" if seed == 1 else "none", label=f"({h},{h}) d {d} L {L}, seed {seed}")
        ax.set(xscale="log", xticks=[20, 40, 80], xticklabels=["20 (ladder)", "40", "80"],
               xlabel=f"{AXES['tpp']} (log scale)", ylabel=loss_label("validation", loss_unit(df.tokenizer)))
        ax.minorticks_off()
        ax.legend(fontsize=8)
        ax.set_title("The knee's rungs on more tokens: (1,1) against (8,8), same batch, more steps")
        save_as(fig, ROOT / "figures/gqa-knee.png")

if __name__ == "__main__":
    main()
