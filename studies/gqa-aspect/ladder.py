"""Write the d/L-consistent GQA ladder as Parquet tables for `costlaw fit`: this study's d 128 L 2 and d 192 L 3
runs, and gqa-heads-steps' runs from d 256 up (d 256 L 4, 320 L 5, 384 L 6, 512 L 6, 640 L 8, L 7 for (8,8)).
gqa-heads-steps' d 128 and d 192 rungs (L 4) are left out: they are the rungs this study replaces.

    python studies/gqa-aspect/ladder.py     # ladder.parquet (every run) and ladder-seedmean.parquet
"""

from pathlib import Path

import duckdb

HERE = Path(__file__).resolve().parent
COLUMNS = "n_heads, n_kv_heads, d_model, n_layers, seed, params_non_embedding as N, val_loss as loss"
QUERY = f"""select *, 'gqa-aspect' as study from (select {COLUMNS} from a.runs where status = 'completed')
union all
select *, 'gqa-heads-steps' as study from (select {COLUMNS} from s.runs where status = 'completed' and d_model >= 256)
order by n_heads, n_kv_heads, N, seed"""
MEAN = """select n_heads, n_kv_heads, d_model, n_layers, any_value(N) as N, avg(loss) as loss, count(*) as seeds
from ladder group by all order by n_heads, n_kv_heads, N"""


def main() -> None:
    con = duckdb.connect()
    con.execute(f"attach '{HERE / 'results.duckdb'}' as a (read_only)")
    con.execute(f"attach '{HERE.parent / 'gqa-heads-steps/results.duckdb'}' as s (read_only)")
    con.execute(f"create temp table ladder as {QUERY}")
    con.execute(f"copy ladder to '{HERE / 'ladder.parquet'}' (format parquet)")
    con.execute(f"copy ({MEAN}) to '{HERE / 'ladder-seedmean.parquet'}' (format parquet)")
    n, means = con.execute(f"select (select count(*) from ladder), (select count(*) from ({MEAN}))").fetchone()
    print(f"ladder.parquet: {n} runs; ladder-seedmean.parquet: {means} configs")


if __name__ == "__main__":
    main()
