"""FP8 training, opt-in (`train.precision = "fp8"`): the blocks' linear layers (attention's wqkv and wo, the MLP's
w_gate_up and w_down) run their three matmuls in float8 through torchao's Float8Linear (dynamic tensorwise
scales: e4m3 for inputs and weights, e5m2 for gradients); everything else autocasts to bf16 as with "bf16".

The embedding and the output head stay in bf16: the head is applied functionally inside the loss (never as a
module), and low-precision output layers are where FP8 recipes lose accuracy. Weights stay fp32 parameters with
the same names, so checkpoints, `init_from`, kv-eval and export read an fp8 run like any other. Evaluation swaps
the plain layers back (`to_plain`), so an fp8 run's val loss measures its weights the way every run is measured.

A GPU runs float8 matmuls from compute capability 8.9 (Ada, Hopper); torch emulates them on a CPU (slow, for
tests). torchao is an optional dependency: `pip install "costlaw[fp8]"`.
"""

from __future__ import annotations

import torch
from torch import nn

from costlaw.costmodel.core.errors import ConfigError

MIN_CAPABILITY = (8, 9)
# the backbone's own layers (runs/models): a KV policy's modules attached inside a block keep their precision
LAYERS = ("wqkv", "wo", "w_gate_up", "w_down")
# torch._scaled_mm wants both of a weight's dimensions divisible by 16; a smaller layer stays bf16
ALIGN = 16


def check(device: torch.device) -> None:
    """One-line ConfigErrors for an fp8 run this machine cannot train; called before anything is written."""
    try:
        import torchao.float8  # noqa: F401
    except ImportError as e:
        raise ConfigError("train.precision", f"\"fp8\" needs torchao ({e}); install it with "
                                             "pip install \"costlaw[fp8]\", or use \"bf16\"") from None
    if device.type == "cuda":
        cap = torch.cuda.get_device_capability(device)
        if cap < MIN_CAPABILITY:
            raise ConfigError("train.precision", f"\"fp8\" needs a GPU of compute capability "
                                                 f"{MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or newer (Ada, Hopper); "
                                                 f"{torch.cuda.get_device_name(device)} is {cap[0]}.{cap[1]}: use "
                                                 "\"bf16\"")


def _block_linear(module: nn.Module, fqn: str) -> bool:
    return (fqn.startswith("blocks.") and fqn.rsplit(".", 1)[-1] in LAYERS and isinstance(module, nn.Linear)
            and module.in_features % ALIGN == 0 and module.out_features % ALIGN == 0)


def to_float8(model: nn.Module) -> int:
    """Swap the blocks' linear layers for Float8Linear in place (same weight parameters); returns how many."""
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    convert_to_float8_training(model, module_filter_fn=_block_linear, config=Float8LinearConfig())
    return sum(_is_float8(m) for m in model.modules())


def to_plain(model: nn.Module) -> int:
    """Swap every Float8Linear back to nn.Linear holding the same weight; returns how many."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if _is_float8(child):
                plain = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None, device="meta")
                plain.weight = child.weight
                if child.bias is not None:
                    plain.bias = child.bias
                setattr(parent, name, plain)
                swapped += 1
    return swapped


def _is_float8(module: nn.Module) -> bool:
    return type(module).__name__ == "Float8Linear"
