"""`costlaw ingest`: load finished run directories into a DuckDB results file (the only writer)."""

from __future__ import annotations

import json
import sys


def add_arguments(p):
    p.add_argument("--root", required=True, help="directory to scan (recursively) for run directories")
    p.add_argument("--db", required=True, help="the DuckDB results file (created if absent)")
    p.add_argument("--wait", type=float, default=10.0,
                   help="seconds to wait for another ingest or reader to let go of the file (default 10)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")


def main(args) -> int:
    from costlaw.analysis.store import ingest
    from costlaw.costmodel.core.units import table

    def progress(line: str) -> None:
        print(f"ingest: {line}", file=sys.stderr)

    report = ingest(args.root, args.db, wait=args.wait, progress=progress)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    if report.migrated_from == 0:
        print(f"created {args.db} (schema version {report.schema_version})")
    elif report.migrated_from != report.schema_version:
        print(f"schema upgraded from version {report.migrated_from} to {report.schema_version}")
    for title, items in (("incomplete (skipped)", report.incomplete), ("corrupt (skipped)", report.corrupt),
                         ("skipped", report.skipped)):
        if items:
            print(f"{title}:")
            print(table([{"dir": i["dir"], "run_id": i["run_id"], "reason": i["reason"]} for i in items]))
    print(report.line())
    return 0
