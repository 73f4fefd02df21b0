"""Recommended configs -> a sweep spec that trains them with the ladder's own recipe on a seed the ladder never used,
so the measured losses test the prediction intervals (the closed loop: record, train, ingest, `closed_loop` view).

`spec_text(points, recipe, seed)` keeps everything of the recipe (the ladder's sweep spec) that is not the model:
its [base] data/train/eval tables, its [derived] formulas for data/train/eval fields (a batch that grows with
N, tokens = 20·N, ...), its [resources] and its contexts; each point is a recommended ModelConfig written out in
full (a [derived] formula for a model field is dropped: the recommendation states every model field), and the
sweep runs once, at `seed`. `merge_points` adds the points of an earlier file this wrote, so several recommend
calls (targets, contexts, budgets) build one spec; a config already there is not added twice.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path

from costlaw.costmodel.core.errors import CostlawError
from costlaw.costmodel.tomlw import dumps

HEADER = "# costlaw recommend --spec-out"
_RECIPE = re.compile(r"^# recipe: (.*) seed: (-?\d+)$", re.M)
_POINT = re.compile(r"^  (\{.*\}),(  # .*)?$")


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise CostlawError(f"--spec-out: {v} cannot be a sweep value")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise CostlawError(f"--spec-out: cannot write {type(v).__name__} into a sweep spec")


def model_fields(model: dict) -> dict:
    """A ModelConfig.to_dict() as the spec's dotted paths; a KV policy is left out (it is evaluated on the trained
    dense model with costlaw kv-eval, not trained)."""
    return {f"model.{k}": v for k, v in model.items() if v is not None and k != "kv_policy"}


def point_line(model: dict, comment: str) -> str:
    body = ", ".join(f"{json.dumps(k)} = {_value(v)}" for k, v in model_fields(model).items())
    return f"  {{ {body} }}," + (f"  # {' '.join(comment.split())}" if comment else "")


def read_recipe(recipe: str | Path) -> dict:
    p = Path(recipe)
    if not p.is_file():
        raise CostlawError(f"--recipe-from: no such file {str(p)!r}; give the ladder's sweep spec (TOML)")
    try:
        raw = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise CostlawError(f"--recipe-from: {p} is not valid TOML ({e}); give the ladder's sweep spec") from None
    if not isinstance(raw.get("base"), dict) or not isinstance(raw.get("sweep"), dict):
        raise CostlawError(f"--recipe-from: {p} has no [sweep] and [base] tables; give the ladder's sweep spec")
    return raw


def merge_points(path: str | Path, recipe: str | Path, seed: int) -> list[str]:
    """The point lines of an existing spec this module wrote from the same recipe and seed ([] when `path` does not
    exist); CostlawError when it is another file, another recipe or seed, or was edited."""
    p = Path(path)
    if not p.exists():
        return []
    text = p.read_text()
    m = _RECIPE.search(text)
    if not text.startswith(HEADER) or m is None:
        raise CostlawError(f"--spec-out: {p} exists and was not written by --spec-out; give a new file name")
    if Path(m.group(1)).resolve() != Path(recipe).resolve() or int(m.group(2)) != int(seed):
        raise CostlawError(f"--spec-out: {p} was written from recipe {m.group(1)} at seed {m.group(2)}; give the same "
                           "--recipe-from and --train-seed to add to it, or a new file name")
    lines = [line for line in text.splitlines() if _POINT.match(line)]
    try:
        n = sum(len(a.get("list", [])) for a in tomllib.loads(text).get("axes", []))
    except tomllib.TOMLDecodeError:
        n = -1
    if n != len(lines):
        raise CostlawError(f"--spec-out: {p} was edited by hand (its points no longer read back); give a new file name")
    return lines


def spec_text(lines: list[str], recipe: str | Path, seed: int, name: str | None = None) -> str:
    """The sweep spec (module doc) of point lines (`point_line`) trained with `recipe`'s settings at `seed`."""
    if not lines:
        raise CostlawError("--spec-out: no recommended config to write (no context has a winner)")
    raw = read_recipe(recipe)
    sweep = raw["sweep"]
    name = name or f"{sweep.get('name', 'ladder')}-recommended-s{seed}"
    base = {k: v for k, v in raw["base"].items() if k in ("data", "train", "eval")}
    dropped = [k for k in raw.get("derived", {}) if k.startswith("model.")]
    derived = {k: v for k, v in raw.get("derived", {}).items() if not k.startswith("model.")}
    first = json.loads(json.dumps(tomllib.loads("p = " + _POINT.match(lines[0]).group(1))["p"]))
    head = [HEADER + f": {len(lines)} recommended config(s), trained with the ladder's own recipe on a seed it never "
                     "used, so the measured losses test the prediction intervals.",
            f"# recipe: {Path(recipe).resolve()} seed: {int(seed)}",
            "# Kept from the recipe: [base] data/train/eval, [derived] formulas for them, [resources], contexts."
            + (f" Dropped (the configs state every model field): {', '.join(dropped)}." if dropped else ""),
            "# Each point's comment: candidate, context, target, predicted loss and its intervals. Train, then "
            "ingest into the store that recorded them and read: costlaw query --db FILE \"select * from closed_loop\""]
    doc: dict = {"sweep": {"name": name, "description": f"{len(lines)} recommended configs on seed {int(seed)}, "
                                                       f"recipe of {sweep.get('name', Path(recipe).name)}",
                           "runs_cap": len(lines), "seeds": [int(seed)]}}
    if sweep.get("contexts") is not None:
        doc["sweep"]["contexts"] = sweep["contexts"]
    body = [dumps(doc).rstrip()]
    for section, table in base.items():
        body.append(f"[base.{section}]\n" + dumps(table).rstrip())
    body.append("[base.model]\n" + "\n".join(f"{k.split('.', 1)[1]} = {_value(v)}" for k, v in first.items()))
    body.append("[[axes]]\nlist = [\n" + "\n".join(lines) + "\n]")
    if derived:
        body.append("[derived]\n" + "\n".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in derived.items()))
    if isinstance(raw.get("resources"), dict):
        body.append("[resources]\n" + dumps(raw["resources"]).rstrip())
    return "\n".join(head) + "\n" + "\n\n".join(body) + "\n"
