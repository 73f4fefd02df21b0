"""`costlaw query`: read-only SQL on a results file (tables runs, steps, evals, fits, recommendations and the views)."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

FORMATS = ("table", "csv", "json", "parquet")


def add_arguments(p):
    import argparse

    from costlaw.analysis.store.views import describe

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = ("tables:\n"
                "  runs            one row per run: flattened config, summary, analytic costs, environment\n"
                "  steps           (run_id, step): tokens, loss, lr, grad_norm, tokens_per_s, time_s\n"
                "  evals           (run_id, eval, tags, metric): value; tag columns context, bucket, depth,\n"
                "                  policy, keep, budget, batch\n"
                "  fits            fitted laws (law, group_keys, params, objective, r2, ci95, ...)\n"
                "  recommendations `costlaw recommend --record`: one row per (winner, context): rec_id, model_id,\n"
                "                  candidate, target_loss, predicted_loss, predicted_lo/hi (95%), costs, budgets\n"
                "  schema_version  the migrations applied\n\nviews:\n" + describe() + "\n\n"
                "closed_loop: loss = val_loss, else final_loss (what the laws were fitted to); inside = loss within\n"
                "  [predicted_lo, predicted_hi]; error = loss - predicted_loss; rel_error = error / predicted_loss;\n"
                "  a recommendation not trained yet has one row with NULL run columns\n\n"
                "what a query may do: read the results file and nothing else. One read-only statement is run on a\n"
                "  read-only connection with DuckDB's external access off, so read_csv, read_parquet, read_text,\n"
                "  glob, ATTACH, COPY and extensions are refused: a statement from a report or a colleague cannot\n"
                "  read your files. To join the results with another file, load both in Python (polars, pandas).\n"
                "  Errors (a refused statement, a failed cast while rows are fetched) are one line, exit 2.\n\n"
                "examples:\n"
                "  costlaw query --db results.duckdb \"SELECT n_heads, n_kv_heads, avg(final_loss) "
                "FROM run_summary GROUP BY ALL\"\n"
                "  costlaw query --db results.duckdb \"SELECT * FROM closed_loop\"")
    from costlaw import options

    p.add_argument("--db", required=True, help="the DuckDB results file written by costlaw ingest")
    p.add_argument("sql", nargs="?", help="one read-only statement (SELECT, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN)")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    p.add_argument("--json", dest="format", action="store_const", const="json",
                   help="the rows as a JSON list of objects (the same as --format json)")
    p.add_argument("--out", help="write to this file instead of stdout (required for parquet)")
    p.add_argument("--list", action="store_true", help="list the tables and views with their row counts")
    options.bounded(p.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                                   help="seconds to wait while an ingest holds the file (default 10)"), 0, 86_400)
    options.add_wide(p)


def _write(out: str, data: bytes) -> None:
    from costlaw.costmodel.core.files import write_atomic

    write_atomic(out, data)


def _json_default(v):
    return v.isoformat() if hasattr(v, "isoformat") else str(v)


def main(args) -> int:
    from costlaw.analysis.store.query import list_objects, query_arrow, query_rows, sql_errors
    from costlaw.costmodel.core.errors import CostlawError
    from costlaw.costmodel.core.files import clean_json
    from costlaw.costmodel.core.units import table, terminal_width
    from costlaw.options import input_dbs, output_file

    input_dbs(args.db)
    if args.out:
        out, db = output_file(args.out, "--out", "the query's result").resolve(), Path(args.db).resolve()
        if out in (db, db.with_name(db.name + ".wal"), db.with_name(db.name + ".lock")):
            raise CostlawError(f"--out: {args.out} is the database itself; choose another file")
    width = None if args.wide or args.out else terminal_width()
    if args.list:
        objects = list_objects(args.db, wait=args.wait)
        print(json.dumps(objects, default=_json_default) if args.format == "json" else table(objects, width=width))
        return 0
    if not args.sql:
        raise CostlawError("sql: missing; give one statement, e.g. \"SELECT * FROM run_summary\", or --list")
    if args.format == "parquet":
        if not args.out:
            raise CostlawError("--format: parquet is binary; give --out FILE.parquet")
        import pyarrow.parquet as pq

        result = query_arrow(args.db, args.sql, wait=args.wait)
        buf = io.BytesIO()
        with sql_errors():  # a type Parquet has no form for (a union, an interval)
            pq.write_table(result, buf)
        _write(args.out, buf.getvalue())
        return 0
    cols, rows = query_rows(args.db, args.sql, wait=args.wait)
    if args.format == "table":
        text = (table([dict(zip(cols, r)) for r in rows], columns=cols, width=width) if rows
                else f"(no rows; columns: {', '.join(cols)})") + "\n"
    elif args.format == "json":
        # strict JSON: NaN and infinities are null, as everywhere in costlaw
        text = json.dumps(clean_json([dict(zip(cols, r)) for r in rows]), default=_json_default,
                          allow_nan=False) + "\n"
    else:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        w.writerows(rows)
        text = buf.getvalue()
    if args.out:
        _write(args.out, text.encode())
    else:
        sys.stdout.write(text)
    return 0
