"""Data: corpus sources, tokenizers, preparation into memory-mapped shards, and the training loader.

`load_corpus(spec, tokenizer, long_docs)` returns a prepared `Corpus` (preparing and caching it on first
use); `prepare_corpus(...)` writes one explicitly (runs.data.prepare.load / .prepare). No torch here except
in `runs.data.loader`.
"""

from costlaw.runs.data.prepare import load as load_corpus
from costlaw.runs.data.prepare import prepare as prepare_corpus
from costlaw.runs.data.shards import Corpus, Split
from costlaw.runs.data.tokenizers import fetch_gpt2, find_gpt2, get_tokenizer

__all__ = ["Corpus", "Split", "fetch_gpt2", "find_gpt2", "get_tokenizer", "load_corpus", "prepare_corpus"]
