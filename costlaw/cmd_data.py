"""`costlaw data`: prepare token shards from a corpus, fetch the GPT-2 BPE file, list prepared corpora.

  costlaw data prepare --source stdlib|site-packages|PATH|GLOB --tokenizer byte|gpt2 [--out DIR]
  costlaw data fetch-gpt2 [--dest FILE]
  costlaw data list

Without --out, `prepare` writes to the cache ($COSTLAW_CACHE/corpora, default ~/.cache/costlaw), where
`costlaw run` finds it (and prepares it itself on first use). Sources and document rules: runs.data.sources.
"""

from __future__ import annotations

import json


def add_arguments(p):
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    prep = sub.add_parser("prepare", help="tokenize a corpus into memory-mapped shards with a manifest")
    prep.add_argument("--source", default="stdlib",
                      help="stdlib | site-packages | a directory (its *.py files) | a file | a glob (default stdlib)")
    prep.add_argument("--tokenizer", default="byte", help="byte (257 ids) | gpt2 (tiktoken r50k_base, 50257 ids)")
    prep.add_argument("--out", help="output directory (default: the cache, reused if already prepared)")
    prep.add_argument("--no-long-docs", dest="long_docs", action="store_false",
                      help="one document per file (default: the files of a directory concatenated, ProLong-style)")
    prep.add_argument("--workers", type=int, help="tokenizer processes (default: min(16, CPUs))")
    prep.add_argument("--json", action="store_true", help="print the manifest summary as JSON")
    fetch = sub.add_parser("fetch-gpt2", help="get gpt2.tiktoken from the openai-whisper sdist with pip")
    fetch.add_argument("--dest", help="where to put it (default $COSTLAW_CACHE/gpt2.tiktoken)")
    fetch.add_argument("--index-url", help="a PyPI mirror for pip")
    lst = sub.add_parser("list", help="prepared corpora in the cache")
    lst.add_argument("--json", action="store_true")
    # subparsers are plain argparse parsers: keep errors on one line like the rest of the CLI
    for sp in (prep, fetch, lst):
        sp.error = lambda message, _sp=sp: _sp.exit(2, f"{_sp.prog}: error: {message}\n")


def _row(m: dict, path) -> dict:
    return {"corpus_id": m["corpus_id"], "source": m["source"], "tokenizer": m["tokenizer"],
            "long_docs": m["long_docs"], "files": m["n_files"], "train docs": m["splits"]["train"]["n_docs"],
            "train tokens": m["splits"]["train"]["tokens"], "val docs": m["splits"]["val"]["n_docs"],
            "val tokens": m["splits"]["val"]["tokens"], "prepare s": m.get("prepare_s"), "path": str(path)}


def main(args) -> int:
    from costlaw.costmodel.core.units import table

    if args.action == "fetch-gpt2":
        from pathlib import Path

        from costlaw.runs.data.tokenizers import fetch_gpt2

        path = fetch_gpt2(Path(args.dest) if args.dest else None, args.index_url)
        print(f"gpt2.tiktoken (r50k_base, sha256 verified) at {path}")
        return 0
    if args.action == "list":
        from costlaw.runs.data.shards import MANIFEST
        from costlaw.runs.data.tokenizers import cache_dir

        rows = []
        root = cache_dir() / "corpora"
        for d in sorted(root.iterdir()) if root.is_dir() else []:
            if (d / MANIFEST).is_file():
                rows.append(_row(json.loads((d / MANIFEST).read_text()), d))
        print(json.dumps(rows, indent=2) if args.json else table(rows) if rows else f"no prepared corpora in {root}")
        return 0
    from costlaw.runs.data.prepare import prepare
    from costlaw.runs.data.shards import Corpus

    if args.workers is not None and args.workers < 1:
        from costlaw.costmodel import ConfigError

        raise ConfigError("--workers", f"must be >= 1, got {args.workers}")
    path = prepare(args.source, args.tokenizer, args.long_docs, out=args.out, workers=args.workers,
                   progress=not args.json)
    row = _row(Corpus.open(path).manifest, path)
    print(json.dumps(row, indent=2) if args.json else table([row]))
    return 0
