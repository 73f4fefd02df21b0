"""The Hugging Face configs shipped as data (costmodel/data/hf): each model's config.json and its published
parameter count, in the order of costmodel/data/hf/published.toml. The presets are generated from them."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

from costlaw.costmodel.hf.model import HFModel
from costlaw.costmodel.hf.read import read_hf_config

DATA = Path(__file__).resolve().parent.parent / "data" / "hf"
TABLE = DATA / "published.toml"


@dataclass(frozen=True)
class Shipped:
    name: str
    repo: str
    model: HFModel
    params: int  # the published total
    params_source: str
    active: float | None = None  # the model card's active count in billions (mixtures of experts)

    @property
    def path(self) -> Path:
        return DATA / f"{self.name}.json"


@functools.cache
def shipped() -> tuple[Shipped, ...]:
    table = tomllib.loads(TABLE.read_text())
    out = []
    for name, row in table.items():
        model = read_hf_config(DATA / f"{name}.json")
        source = f"{row['repo']} config.json (costmodel/data/hf/{name}.json)"
        out.append(Shipped(name, row["repo"], HFModel(model.config, model.arch, model.notes, source), row["params"],
                           row.get("params_source", "Hub safetensors total"), row.get("active")))
    return tuple(out)
