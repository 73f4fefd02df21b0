"""Tokenizers: `byte` (256 byte values + <|endoftext|> = 257 ids) and `gpt2` (tiktoken r50k_base, 50,257 ids).

GPT-2 BPE works offline from its `gpt2.tiktoken` rank file. tiktoken ships no rank files; the file is
byte-identical to tiktoken's r50k_base (same sha256) and ships inside the `openai-whisper` sdist on PyPI
(whisper/assets/gpt2.tiktoken). We look for it, in order, at $COSTLAW_CACHE/gpt2.tiktoken, in
$TIKTOKEN_CACHE_DIR / $DATA_GYM_CACHE_DIR (as gpt2.tiktoken or under tiktoken's own cache key), in
tiktoken's default cache, and inside an installed `whisper` package (located without importing it:
importing whisper pulls in torch and numba). `fetch_gpt2()` (`costlaw data fetch-gpt2`) gets it with pip.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.core.files import write_atomic

EOT_TEXT = "<|endoftext|>"
R50K_URL = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
R50K_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
R50K_CACHE_KEY = hashlib.sha1(R50K_URL.encode()).hexdigest()  # tiktoken's cache file name for it
R50K_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
WHISPER_ASSET = "whisper/assets/gpt2.tiktoken"


def cache_dir() -> Path:
    """$COSTLAW_CACHE, default ~/.cache/costlaw."""
    return Path(os.environ.get("COSTLAW_CACHE") or Path.home() / ".cache" / "costlaw")


class ByteTokenizer:
    name = "byte"
    vocab_size = 257
    eot = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_bytes(self, data: bytes) -> np.ndarray:
        return np.frombuffer(data, dtype=np.uint8).astype(np.uint16)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")


class GPT2Tokenizer:
    name = "gpt2"
    vocab_size = 50257
    eot = 50256

    def __init__(self, path: Path):
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe

        self.path = path
        self.enc = tiktoken.Encoding(name="r50k_base", pat_str=R50K_PAT,
                                     mergeable_ranks=load_tiktoken_bpe(str(path), expected_hash=R50K_SHA256),
                                     special_tokens={EOT_TEXT: self.eot}, explicit_n_vocab=self.vocab_size)

    def encode(self, text: str) -> list[int]:
        return self.enc.encode_ordinary(text)  # "<|endoftext|>" inside a source file is plain text

    def encode_bytes(self, data: bytes) -> np.ndarray:
        return np.asarray(self.encode(data.decode("utf-8", errors="replace")), dtype=np.uint16)

    def decode(self, ids) -> str:
        return self.enc.decode([int(i) for i in ids])


def gpt2_candidates() -> list[Path]:
    out = [cache_dir() / "gpt2.tiktoken"]
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if os.environ.get(var):
            out += [Path(os.environ[var]) / "gpt2.tiktoken", Path(os.environ[var]) / R50K_CACHE_KEY]
    out.append(Path(tempfile.gettempdir()) / "data-gym-cache" / R50K_CACHE_KEY)
    try:
        import importlib.util

        spec = importlib.util.find_spec("whisper")  # finds the package without importing it
        if spec is not None and spec.submodule_search_locations:
            out += [Path(p) / "assets" / "gpt2.tiktoken" for p in spec.submodule_search_locations]
    except (ImportError, ValueError):
        pass
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def find_gpt2() -> Path:
    for p in gpt2_candidates():
        if p.is_file() and _sha256(p) == R50K_SHA256:
            return p
    raise CostlawError(
        f"tokenizer: gpt2 needs the GPT-2 BPE file gpt2.tiktoken, not found; run `costlaw data fetch-gpt2`, or "
        f"`pip download --no-deps --no-binary :all: openai-whisper` and extract {WHISPER_ASSET} from the sdist "
        f"to {cache_dir() / 'gpt2.tiktoken'}")


@functools.lru_cache(maxsize=4)
def _gpt2(path: str) -> GPT2Tokenizer:
    return GPT2Tokenizer(Path(path))


def get_tokenizer(name: str):
    if name == "byte":
        return ByteTokenizer()
    if name == "gpt2":
        return _gpt2(str(find_gpt2()))
    raise CostlawError(f"tokenizer: unknown tokenizer {name!r}; use byte or gpt2")


def fetch_gpt2(dest: Path | None = None, index_url: str | None = None) -> Path:
    """Download the openai-whisper sdist with pip and extract gpt2.tiktoken to `dest` (default
    $COSTLAW_CACHE/gpt2.tiktoken), checking its sha256 against tiktoken's r50k_base hash."""
    dest = Path(dest) if dest else cache_dir() / "gpt2.tiktoken"
    if dest.is_file() and _sha256(dest) == R50K_SHA256:
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--dest", tmp,
               "openai-whisper"]
        if index_url:
            cmd += ["--index-url", index_url]
        r = subprocess.run(cmd, capture_output=True, text=True)
        sdists = sorted(Path(tmp).glob("openai*whisper*.tar.gz"))
        if r.returncode != 0 or not sdists:
            last = (r.stderr.strip().splitlines() or ["no sdist downloaded"])[-1]
            raise CostlawError(f"fetch-gpt2: pip could not download the openai-whisper sdist ({last}); on a machine "
                               f"with PyPI access run `pip download --no-deps --no-binary :all: openai-whisper` and "
                               f"copy {WHISPER_ASSET} from it to {dest}")
        with tarfile.open(sdists[-1]) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith(WHISPER_ASSET)), None)
            if member is None:
                raise CostlawError(f"fetch-gpt2: {sdists[-1].name} has no {WHISPER_ASSET}; extract gpt2.tiktoken "
                                   f"from an older openai-whisper sdist to {dest}")
            data = tar.extractfile(member).read()
    if hashlib.sha256(data).hexdigest() != R50K_SHA256:
        raise CostlawError(f"fetch-gpt2: {WHISPER_ASSET} in the sdist does not match r50k_base's sha256; "
                           f"place a verified gpt2.tiktoken at {dest}")
    write_atomic(dest, data)
    return dest
