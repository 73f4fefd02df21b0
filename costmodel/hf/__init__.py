"""Hugging Face configs in: a config.json priced by the cost model (standard library only, like all of costmodel).

`read_hf_config(path)` / `from_hf_dict(d)` map a config.json to an `HFModel`: the ModelConfig costlaw prices
(sliding windows as sink_window(0,W) layers), the architecture's parameters ModelConfig has no field for, and the
stated approximations. `hf_costs` prices it like costmodel.costs. `shipped()` is the table of published configs
shipped as data that costmodel.presets turns into presets.
"""

from costlaw.costmodel.hf.model import Arch, HFModel
from costlaw.costmodel.hf.pricing import hf_costs
from costlaw.costmodel.hf.read import from_hf_dict, read_hf_config
from costlaw.costmodel.hf.shipped import Shipped, shipped

__all__ = ["Arch", "HFModel", "hf_costs", "from_hf_dict", "read_hf_config", "Shipped", "shipped"]
