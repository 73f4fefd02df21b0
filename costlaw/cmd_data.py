"""`costlaw data`: prepare token shards from a corpus, fetch the GPT-2 BPE file, list prepared corpora.

  costlaw data prepare --source stdlib|site-packages|PATH|GLOB --tokenizer byte|gpt2 [--out DIR]
  costlaw data fetch-gpt2 [--dest FILE]
  costlaw data list

Without --out, `prepare` writes to the cache ($COSTLAW_CACHE/corpora, default ~/.cache/costlaw), where
`costlaw run` finds it (and prepares it itself on first use); a corpus the cache already holds (same files,
tokenizer and document rules) is reused, and `prepare` says so. Sources and document rules: runs.data.sources.
"""

from __future__ import annotations

import json
import sys

ACTIONS = {"prepare": "tokenize a corpus into memory-mapped shards with a manifest (a cached one is reused)",
           "fetch-gpt2": "get gpt2.tiktoken from the openai-whisper sdist with pip",
           "list": "prepared corpora in the cache"}


def add_arguments(p):
    from costlaw import options

    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    prep = sub.add_parser("prepare", help=ACTIONS["prepare"])
    prep.add_argument("--source", default="stdlib",
                      help="stdlib | site-packages | a directory (its *.py files) | a file | a glob (default stdlib)")
    prep.add_argument("--tokenizer", default="byte", help="byte (257 ids) | gpt2 (tiktoken r50k_base, 50257 ids)")
    prep.add_argument("--out", help="output directory (default: the cache, reused if already prepared)")
    prep.add_argument("--no-long-docs", dest="long_docs", action="store_false",
                      help="one document per file (default: the files of a directory concatenated, ProLong-style)")
    options.bounded(prep.add_argument("--workers", type=int, help="tokenizer processes (default: min(16, CPUs))"),
                    1, 1024)
    options.add_json(prep, "print the manifest summary as JSON (with \"reused\": whether the cache held it)")
    options.add_wide(prep)
    fetch = sub.add_parser("fetch-gpt2", help=ACTIONS["fetch-gpt2"])
    fetch.add_argument("--dest", help="where to put it (default $COSTLAW_CACHE/gpt2.tiktoken)")
    fetch.add_argument("--index-url", help="a PyPI mirror for pip")
    options.add_json(fetch, "print {path, encoding} as JSON")
    lst = sub.add_parser("list", help=ACTIONS["list"])
    options.add_json(lst, "the corpora as a JSON list")
    options.add_wide(lst)


def _row(m: dict, path) -> dict:
    return {"corpus_id": m["corpus_id"], "source": m["source"], "tokenizer": m["tokenizer"],
            "long_docs": m["long_docs"], "files": m["n_files"], "train docs": m["splits"]["train"]["n_docs"],
            "train tokens": m["splits"]["train"]["tokens"], "val docs": m["splits"]["val"]["n_docs"],
            "val tokens": m["splits"]["val"]["tokens"], "prepare s": m.get("prepare_s"), "path": str(path)}


def main(args) -> int:
    from costlaw import options
    from costlaw.costmodel.core.units import table, terminal_width

    if args.action == "fetch-gpt2":
        from pathlib import Path

        from costlaw.runs.data.tokenizers import fetch_gpt2

        dest = options.output_file(args.dest, "--dest", "gpt2.tiktoken") if args.dest is not None else None
        path = fetch_gpt2(Path(dest) if dest else None, args.index_url)
        if args.json:
            print(json.dumps({"path": str(path), "encoding": "r50k_base", "sha256_verified": True}, indent=1))
        else:
            print(f"gpt2.tiktoken (r50k_base, sha256 verified) at {path}")
        return 0
    width = None if args.wide else terminal_width()
    if args.action == "list":
        from costlaw.runs.data.shards import MANIFEST
        from costlaw.runs.data.tokenizers import cache_dir

        rows = []
        root = cache_dir() / "corpora"
        for d in sorted(root.iterdir()) if root.is_dir() else []:
            if (d / MANIFEST).is_file():
                rows.append(_row(json.loads((d / MANIFEST).read_text()), d))
        print(json.dumps(rows, indent=2) if args.json else table(rows, width=width) if rows
              else f"no prepared corpora in {root}")
        return 0
    from costlaw.runs.data.prepare import prepare
    from costlaw.runs.data.shards import Corpus

    if args.out is not None:
        options.output_dir(args.out, "--out", "the prepared corpus")
    reused = []

    def note(path) -> None:
        reused.append(path)
        print(f"costlaw data: note: reusing the corpus already prepared in the cache at {path} (same files, "
              "tokenizer and document rules); delete that directory to prepare it again", file=sys.stderr)

    path = prepare(args.source, args.tokenizer, args.long_docs, out=args.out, workers=args.workers,
                   progress=not args.json, reused=note)
    row = _row(Corpus.open(path).manifest, path)
    print(json.dumps({**row, "reused": bool(reused)}, indent=2) if args.json else table([row], width=width))
    return 0
