"""Data: sources (the grown site-packages+include too), preparation (shards, manifest, split, long documents),
cache, concurrency, tokenizers."""

import hashlib
import json
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest

from costlaw.costmodel.core.errors import ConfigError, CostlawError
from costlaw.runs.data import prepare as prep
from costlaw.runs.data import sources
from costlaw.runs.data.shards import Corpus
from costlaw.runs.data.tokenizers import ByteTokenizer, find_gpt2, get_tokenizer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COSTLAW_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def make_tree(root: Path) -> Path:
    """A small source tree: a package with two modules and a subpackage, two loose modules, a duplicate,
    an empty file and a non-.py file."""
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("from .b import x\n")
    (root / "pkg" / "b.py").write_text("x = 1\n" * 50)
    (root / "pkg" / "a.py").write_text("def f():\n    return 'a'\n" * 40)
    (root / "pkg" / "sub" / "__init__.py").write_text("")
    (root / "pkg" / "sub" / "c.py").write_text("y = [i for i in range(10)]\n" * 30)
    (root / "loose.py").write_text("print('hello')\n" * 20)
    (root / "other.py").write_text("import os\n" * 30)
    (root / "copy_of_b.py").write_text("x = 1\n" * 50)  # duplicate of pkg/b.py
    (root / "notes.txt").write_text("not python\n")
    return root


def test_resolve_sources(tmp_path):
    root = make_tree(tmp_path / "src")
    src = sources.resolve(str(root))
    names = [f.name for f in src.files]
    assert all(n.endswith(".py") for n in names) and "src/notes.txt" not in names
    assert len(names) == 8
    groups = {f.name: f.group for f in src.files}
    assert groups["src/pkg/a.py"] == groups["src/pkg/b.py"] == "src/pkg"
    assert groups["src/loose.py"] == "src/loose.py"  # a loose module at a non-package root is its own document
    glob = sources.resolve(str(root / "**" / "*.txt"))
    assert [f.name for f in glob.files] == ["src/notes.txt"]
    single = sources.resolve(str(root / "loose.py"))
    assert len(single.files) == 1
    with pytest.raises(ConfigError, match="^corpus: "):
        sources.resolve(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="^corpus: "):
        sources.resolve(str(root / "*.nothing"))


def test_stdlib_source_rules():
    src = sources.resolve("stdlib")
    stdlib = sysconfig.get_paths()["stdlib"]
    assert src.roots == (stdlib,)
    assert all("site-packages" not in str(f.path) and "__pycache__" not in str(f.path) for f in src.files)
    assert any(f.name == "stdlib/json/decoder.py" for f in src.files)
    assert src.total_bytes > 5_000_000


def test_prepare_manifest_shards_and_long_docs(tmp_path):
    root = make_tree(tmp_path / "src")
    out = prep.prepare(str(root), "byte", long_docs=True, out=tmp_path / "c1", progress=False)
    c = Corpus.open(out)
    m = c.manifest
    assert m["tokenizer"] == "byte" and m["vocab_size"] == 257 and m["eot"] == 256 and m["long_docs"]
    assert m["duplicates_skipped"] == 1
    files = {f["name"]: f for f in m["files"]}
    dups = [n for n in ("src/copy_of_b.py", "src/pkg/b.py") if files[n]["duplicate_of"] is not None]
    assert dups == ["src/pkg/b.py"] and files["src/pkg/b.py"]["doc"] is None  # the first copy in order stays
    assert m["files"][files["src/pkg/b.py"]["duplicate_of"]]["name"] == "src/copy_of_b.py"
    assert files["src/pkg/sub/__init__.py"]["doc"] is None  # empty
    for f in m["files"]:
        assert len(f["sha256"]) == 64
    # documents: pkg (__init__, a in sorted order; b is a duplicate), pkg/sub (c), the loose modules
    docs = {d["name"]: d for d in m["documents"]}
    assert set(docs) == {"src/pkg", "src/pkg/sub", "src/loose.py", "src/other.py", "src/copy_of_b.py"}
    pkg = docs["src/pkg"]
    split = c.split(pkg["split"])
    toks = split.doc_tokens(pkg["index"])
    parts = [np.frombuffer((root / "pkg" / n).read_bytes(), np.uint8) for n in ("__init__.py", "a.py")]
    expect = np.concatenate([parts[0], [256], parts[1]]).astype(np.int64)  # files joined by <|endoftext|>
    assert np.array_equal(toks.astype(np.int64), expect)
    assert [m["files"][j]["name"] for j in pkg["files"]] == ["src/pkg/__init__.py", "src/pkg/a.py"]
    # every document lands in the split its content hash says, and no split is empty
    for d in m["documents"]:
        assert d["split"] in ("train", "val")
    assert c.train.n_docs >= 1 and c.val.n_docs >= 1
    assert c.train.n_docs + c.val.n_docs == 5
    assert m["tokens"] == c.train.tokens + c.val.tokens == sum(d["tokens"] for d in m["documents"])
    # per file docs
    out2 = prep.prepare(str(root), "byte", long_docs=False, out=tmp_path / "c2", progress=False)
    c2 = Corpus.open(out2)
    assert c2.train.n_docs + c2.val.n_docs == 6  # 8 files - duplicate - empty
    assert c2.corpus_id != c.corpus_id


def test_corpus_id_and_split_deterministic(tmp_path):
    root = make_tree(tmp_path / "src")
    a = Corpus.open(prep.prepare(str(root), "byte", out=tmp_path / "a", progress=False))
    b = Corpus.open(prep.prepare(str(root), "byte", out=tmp_path / "b", progress=False))
    assert a.corpus_id == b.corpus_id
    assert [(d["name"], d["split"]) for d in a.manifest["documents"]] == \
        [(d["name"], d["split"]) for d in b.manifest["documents"]]
    for s in ("train", "val"):
        assert (tmp_path / "a" / f"{s}-000.bin").read_bytes() == (tmp_path / "b" / f"{s}-000.bin").read_bytes()
    (root / "other.py").write_text("import sys\n" * 30)
    c = Corpus.open(prep.prepare(str(root), "byte", out=tmp_path / "c", progress=False))
    assert c.corpus_id != a.corpus_id
    with pytest.raises(CostlawError, match="^--out: "):
        (tmp_path / "junk").mkdir()
        (tmp_path / "junk" / "x").write_text("x")
        prep.prepare(str(root), "byte", out=tmp_path / "junk", progress=False)


def test_split_rule_is_content_hash():
    files = [{"name": f"r/f{i}.py", "group": f"r/f{i}.py", "sha256": f"{i:064x}", "bytes": 10,
              "duplicate_of": None} for i in range(200)]
    docs = prep.plan_documents(files, long_docs=False)
    for d in docs:
        assert d["split"] == ("val" if prep._val(d["sha256"]) else "train")
    assert 0 < sum(d["split"] == "val" for d in docs) < 40
    one = prep.plan_documents(files[:2], long_docs=True)  # two loose files: two documents
    assert {d["split"] for d in one} == {"train", "val"}
    with pytest.raises(ConfigError, match="^corpus: "):
        prep.plan_documents(files[:1], long_docs=False)


def test_cache_reuse_and_invalidation(tmp_path, cache):
    root = make_tree(tmp_path / "src")
    p1 = prep.prepare(str(root), "byte", progress=False)
    assert p1.parent == cache / "corpora"
    stamp = (p1 / "manifest.json").stat().st_mtime_ns
    p2 = prep.prepare(str(root), "byte", progress=False)
    assert p2 == p1 and (p1 / "manifest.json").stat().st_mtime_ns == stamp
    time.sleep(0.01)
    (root / "loose.py").write_text("print('changed')\n")
    p3 = prep.prepare(str(root), "byte", progress=False)
    assert p3 != p1  # a changed file is a new fingerprint, so a new cache entry
    assert prep.load(str(p1), "byte").corpus_id == Corpus.open(p1).corpus_id  # a prepared directory as a spec
    with pytest.raises(ConfigError, match="^data.tokenizer: "):
        prep.load(str(p1), "gpt2")


def test_concurrent_prepare_one_corpus(tmp_path, cache):
    root = make_tree(tmp_path / "src")
    code = ("import sys; from runs.data.prepare import prepare; "
            "print(prepare(sys.argv[1], 'byte', progress=False))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True, cwd=REPO)
             for _ in range(3)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outs)) == 1
    entries = [p.name for p in (cache / "corpora").iterdir()]
    assert [e for e in entries if ".tmp-" in e] == []
    assert Corpus.open(outs[0]).train.n_docs >= 1


def test_real_stdlib_prepare(tmp_path):
    t0 = time.perf_counter()
    out = prep.prepare("stdlib", "byte", out=tmp_path / "stdlib", progress=False)
    elapsed = time.perf_counter() - t0
    c = Corpus.open(out)
    m = c.manifest
    assert m["bytes"] > 5_000_000 and c.train.tokens + c.val.tokens + len(m["files"]) > m["bytes"] * 0.95
    assert c.train.n_docs > 50 and c.val.n_docs > 0
    assert max(c.train.doc_len) > 100_000  # long documents exist
    assert elapsed < 60


def test_gpt2_missing_says_how_to_get_it(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setenv("COSTLAW_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "t"))
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)  # no installed whisper either
    with pytest.raises(CostlawError) as e:
        find_gpt2()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("tokenizer: ")
    assert "costlaw data fetch-gpt2" in msg and "pip download --no-deps --no-binary :all: openai-whisper" in msg
    assert str(tmp_path / "c" / "gpt2.tiktoken") in msg


def _has_gpt2() -> bool:
    try:
        find_gpt2()
        return True
    except CostlawError:
        return False


@pytest.mark.skipif(not _has_gpt2(), reason="gpt2.tiktoken not present (costlaw data fetch-gpt2)")
def test_gpt2_tokenizer_and_parallel_prepare(tmp_path, monkeypatch):
    tok = get_tokenizer("gpt2")
    assert tok.encode("Hello world") == [15496, 995] and tok.vocab_size == 50257 and tok.eot == 50256
    assert tok.encode("<|endoftext|>") != [50256]  # special text in a source file stays text
    root = make_tree(tmp_path / "src")
    serial = Corpus.open(prep.prepare(str(root), "gpt2", out=tmp_path / "s", workers=1, progress=False))
    monkeypatch.setattr(prep, "PARALLEL_MIN_BYTES", 0)
    par = Corpus.open(prep.prepare(str(root), "gpt2", out=tmp_path / "p", workers=2, progress=False))
    assert serial.corpus_id == par.corpus_id
    for s in ("train", "val"):
        a, b = serial.split(s), par.split(s)
        assert all(np.array_equal(a.doc_tokens(i), b.doc_tokens(i)) for i in range(a.n_docs))
    text = (root / "other.py").read_text()
    doc = next(d for d in serial.manifest["documents"] if d["name"] == "src/other.py")
    assert tok.decode(serial.split(doc["split"]).doc_tokens(doc["index"])) == text


def test_byte_tokenizer_roundtrip():
    tok = ByteTokenizer()
    ids = tok.encode("héllo")
    assert max(ids) < 256 and tok.decode(ids + [256]) == "héllo"


def test_cli_data_prepare(tmp_path):
    root = make_tree(tmp_path / "src")
    r = subprocess.run([sys.executable, "-m", "costlaw", "data", "prepare", "--source", str(root), "--out",
                        str(tmp_path / "o"), "--json"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["corpus_id"] == Corpus.open(tmp_path / "o").corpus_id and row["tokenizer"] == "byte"
    bad = subprocess.run([sys.executable, "-m", "costlaw", "data", "prepare", "--source", str(tmp_path / "nope")],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "corpus:" in bad.stderr


# ---------------------------------------------------------------- the grown source: site-packages+include
def make_site(root: Path) -> Path:
    """A fake site-packages: a package with Python, headers, docs, Cython and its output, data files, and a
    dist-info folder (skipped)."""
    pkg = root / "pkg"
    (pkg / "include" / "pkg").mkdir(parents=True)
    (pkg / "__init__.py").write_text("VERSION = 1\n" * 10)
    (pkg / "fast.py").write_text("def add(a, b):\n    return a + b\n" * 10)
    (pkg / "fast.c").write_text("/* Generated by Cython */\n" * 20)  # Cython's output of fast.py: skipped
    (pkg / "kernels.cu").write_text("__global__ void k() {}\n" * 10)
    (pkg / "include" / "pkg" / "api.h").write_text("int api(void);\n" * 20)
    (pkg / "include" / "pkg" / "vec.hpp").write_text("template <class T> struct vec {};\n" * 10)
    (pkg / "include" / "pkg" / "ops.cuh").write_text("__device__ float op(float);\n" * 10)
    (pkg / "README.md").write_text("# pkg\nA package.\n" * 10)
    (pkg / "guide.rst").write_text("Guide\n=====\n" * 10)
    (pkg / "words.txt").write_text("alpha beta\n" * 10)
    (pkg / "stubs.pyi").write_text("def add(a: int, b: int) -> int: ...\n" * 10)
    (pkg / "table.json").write_text('{"a": 1}\n' * 10)  # data: not a kind the source takes
    (pkg / "lib.so").write_bytes(b"\x7fELF" + bytes(100))
    (root / "pkg-1.0.dist-info").mkdir()
    (root / "pkg-1.0.dist-info" / "LICENSE.txt").write_text("MIT\n" * 10)
    return root


def make_cuda(root: Path) -> Path:
    (root / "include" / "crt").mkdir(parents=True)
    (root / "include" / "cuda.h").write_text("CUresult cuInit(unsigned int);\n" * 20)
    (root / "include" / "crt" / "host_defines.h").write_text("#define __host__\n" * 20)
    (root / "include" / "crt" / "math.hpp").write_text("namespace crt {}\n" * 20)
    (root / "include" / "copy_of_api.h").write_text("int api(void);\n" * 20)  # the same bytes as pkg's api.h
    return root


def test_include_source_finds_headers_sources_and_docs(tmp_path, monkeypatch):
    site_root = make_site(tmp_path / "site-packages")
    cuda = make_cuda(tmp_path / "cuda")
    monkeypatch.setattr(sources, "site_packages_dirs", lambda: [site_root])
    monkeypatch.setenv("CUDA_HOME", str(cuda))
    alone = sources.resolve("site-packages")
    assert [f.name for f in alone.files] == ["site-packages0/pkg/__init__.py", "site-packages0/pkg/fast.py"]
    inc = sources.resolve("include")
    assert sorted(f.name for f in inc.files) == sorted([
        "site-packages0/pkg/kernels.cu", "site-packages0/pkg/include/pkg/api.h",
        "site-packages0/pkg/include/pkg/vec.hpp", "site-packages0/pkg/include/pkg/ops.cuh",
        "site-packages0/pkg/README.md", "site-packages0/pkg/guide.rst", "site-packages0/pkg/words.txt",
        "site-packages0/pkg/stubs.pyi", "cuda-include/cuda.h", "cuda-include/crt/host_defines.h",
        "cuda-include/crt/math.hpp", "cuda-include/copy_of_api.h"])
    grown = sources.resolve("site-packages+include")
    assert grown.label == "site-packages-include" and grown.roots == (str(site_root), str(cuda / "include"))
    by_name = {f.name: f for f in grown.files}
    for f in alone.files:  # the Python files keep their names and groups: a directory's .py and docs are one document
        assert by_name[f.name].group == f.group
    assert by_name["site-packages0/pkg/README.md"].group == by_name["site-packages0/pkg/fast.py"].group
    assert by_name["cuda-include/cuda.h"].group == "cuda-include/cuda.h"  # a loose header: its own document
    assert len(grown.files) == len(alone.files) + len(inc.files)
    assert grown.fingerprint() != alone.fingerprint()
    # prepared: every file in the manifest with its sha256; identical bytes across the two roots kept once
    m = Corpus.open(prep.prepare("site-packages+include", "byte", out=tmp_path / "c", progress=False)).manifest
    assert m["source"] == "site-packages+include" and m["roots"] == list(grown.roots)
    files = {f["name"]: f for f in m["files"]}
    assert set(files) == set(by_name)
    for name, f in files.items():
        assert f["sha256"] == hashlib.sha256(by_name[name].path.read_bytes()).hexdigest()
    assert m["duplicates_skipped"] == 1
    assert [n for n in ("cuda-include/copy_of_api.h", "site-packages0/pkg/include/pkg/api.h")
            if files[n]["duplicate_of"] is not None] == ["site-packages0/pkg/include/pkg/api.h"]
    # byte tokens: every kept file's bytes, plus an <|endoftext|> between the files a document joins
    assert m["tokens"] == sum(f["bytes"] for f in m["files"] if f["doc"] is not None) + \
        sum(len(d["files"]) - 1 for d in m["documents"])


def test_cuda_include_dir_is_found_as_torch_finds_cuda_home(tmp_path, monkeypatch):
    no_headers = tmp_path / "empty"
    (no_headers / "include").mkdir(parents=True)
    toolkit = tmp_path / "toolkit"
    (toolkit / "include").mkdir(parents=True)
    (toolkit / "include" / "cuda_runtime.h").write_text("#pragma once\n")
    (toolkit / "bin").mkdir()
    nvcc = toolkit / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\n")
    nvcc.chmod(0o755)
    monkeypatch.setenv("CUDA_HOME", str(no_headers))  # named, but holds no CUDA headers: passed over
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", str(toolkit / "bin"))
    assert sources.cuda_include_dir() == (toolkit / "include").resolve()
    monkeypatch.setenv("CUDA_PATH", str(toolkit))
    monkeypatch.setenv("PATH", "")
    assert sources.cuda_include_dir() == (toolkit / "include").resolve()


def test_unknown_source_part_is_a_path_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="^corpus: 'site-packages\\+headers' is not"):
        sources.resolve("site-packages+headers")
