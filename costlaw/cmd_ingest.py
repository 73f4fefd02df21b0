"""`costlaw ingest`: load finished run directories into a DuckDB results file (the only writer)."""

from __future__ import annotations

import json
import sys

from costlaw.costmodel.core.exitcodes import FAILED, INPUT, OK


def add_arguments(p):
    import argparse

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = (
        "Every run is ingested on its own: a run whose files break the format (docs/run-directory.md) is reported\n"
        "with its file, key and problem, and every other run is still committed.\n\n"
        "exit status (costmodel/core/exitcodes.py):\n"
        f"  {OK}  every finished run under --root is in the results file (new, replaced or unchanged); runs still\n"
        "     going (incomplete) and copies skipped for a newer one do not count against it\n"
        f"  {FAILED}  the good runs were committed, but some were not: a corrupt run (DONE written,\n"
        "     files broken) or a place under --root that could not be searched (a broken symlink, no permission)\n"
        f"  {INPUT}  refused before writing: a bad --root or --db (e.g. a DuckDB file that is not a costlaw store) or\n"
        "     another writer holding the file past --wait; or the database failed to write (disk full): the\n"
        "     batches committed before the failure stay, a batch is never half written\n\n"
        "symlinks: symlinked directories (a runs/ on a scratch disk) are followed; each real directory is read\n"
        "once, and a link back into what was already read is reported as skipped\n\n"
        "--compact rewrites the results file in 64 KiB blocks without the free space re-ingests leave (after\n"
        "ingesting --root, if given), where that makes it smaller: DuckDB never shrinks a file, and one made in\n"
        "its default 256 KiB blocks takes at least a block per table (analysis/store/compact.py); new files are\n"
        "made in 64 KiB blocks")
    from costlaw import options

    p.add_argument("--root", metavar="DIR",
                   help="the results root to scan (recursively) for run directories (required unless --compact)")
    p.add_argument("--db", required=True, help="the DuckDB results file (created if absent)")
    options.bounded(p.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                                   help="seconds to wait for another ingest or reader to let go of the file "
                                        "(default 10)"), 0, 86_400)
    p.add_argument("--compact", action="store_true",
                   help="rewrite the results file compactly (after ingesting --root, if given)")
    options.add_json(p, "print the report as one JSON object (same exit status)")


def main(args) -> int:
    from costlaw import options
    from costlaw.analysis.store import ingest
    from costlaw.analysis.store.reading import shown
    from costlaw.costmodel.core.units import table

    def progress(line: str) -> None:
        print(f"ingest: {line}", file=sys.stderr)

    if args.root is None:
        if not args.compact:
            from costlaw.costmodel.core.errors import CostlawError

            raise CostlawError("--root: required; give the results root to ingest (or --compact to only rewrite "
                               "--db compactly)")
        done = _compact(args)
        if args.json:
            print(json.dumps(done, indent=2))
        else:
            _say(args.db, done)
        return OK
    options.input_dir(args.root, "--root", "a results root holding run directories (DIR/runs/<run_id>/)")
    options.output_file(args.db, "--db", "the results file")
    report = ingest(args.root, args.db, wait=args.wait, progress=progress)
    status = FAILED if report.failed else OK
    if args.json:
        print(json.dumps({**report.to_dict(), **(_compact(args) if args.compact else {})}, indent=2))
        return status
    if report.migrated_from == 0:
        print(f"created {shown(args.db)} (schema version {report.schema_version})")
    elif report.migrated_from != report.schema_version:
        print(f"schema upgraded from version {report.migrated_from} to {report.schema_version}")
    for title, items in (("incomplete (skipped)", report.incomplete), ("corrupt (skipped)", report.corrupt),
                         ("skipped", report.skipped), ("unreadable (not searched)", report.unreadable)):
        if items:
            print(f"{title}:")
            # every reason in full, however wide: it is what the user has to fix
            print(table([{"dir": i["dir"], "run_id": i["run_id"], "reason": i["reason"]} for i in items]))
    print(report.line())
    if args.compact:
        _say(args.db, _compact(args))
    if report.failed:
        print(f"costlaw ingest: {len(report.corrupt)} corrupt runs and {len(report.unreadable)} unreadable places "
              f"were not ingested (listed above); the other runs were committed", file=sys.stderr)
    return status


def _compact(args) -> dict:
    from costlaw.analysis.store.compact import compact

    before, after = compact(args.db, wait=args.wait)
    return {"compacted": {"db": str(args.db), "bytes_before": before, "bytes_after": after}}


def _say(db, done: dict) -> None:
    from costlaw.analysis.store.reading import shown

    c = done["compacted"]
    print(f"compacted {shown(db)}: {c['bytes_before']:,} -> {c['bytes_after']:,} bytes")
