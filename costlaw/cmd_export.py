"""`costlaw export RUN_DIR --hf OUT`: a finished run as a Hugging Face checkpoint (runs/export_hf.py)."""

from __future__ import annotations

import json


def add_arguments(p):
    p.add_argument("run_dir", help="a completed run directory (config.json, DONE, checkpoint.pt)")
    p.add_argument("--hf", required=True, metavar="OUT",
                   help="write config.json and model.safetensors here: LlamaForCausalLM for all-full layers, "
                        "MistralForCausalLM when every layer is sink_window(0,W), Qwen2ForCausalLM (layer_types, zero "
                        "q/k/v biases) for full and sink_window(0,W) layers mixed; sink tokens, block_strided layers "
                        "and KV policies are refused with the reason. No tokenizer is written")
    p.add_argument("--dtype", default="fp32", help="fp32 (the checkpoint's own, the default) | bf16 | fp16")
    p.add_argument("--force", action="store_true", help="overwrite an export already in OUT")
    p.add_argument("--json", action="store_true", help="print what was written as one JSON object")


def main(args) -> int:
    from costlaw.options import output_dir
    from costlaw.runs.export_hf import export_hf

    # the run directory is checked by export_hf (what a completed run holds); the output here, before any work
    output_dir(args.hf, "--hf", "the Hugging Face checkpoint (config.json, model.safetensors)")
    done = export_hf(args.run_dir, args.hf, dtype=args.dtype, force=args.force)
    if args.json:
        print(json.dumps(done, indent=2))
    else:
        print(f"run {done['run_id']} -> {done['out']}: {done['architecture']}, {done['tensors']} tensors "
              f"{done['dtype']}, {done['bytes']:,} bytes; tokenizer {done['tokenizer']} (not exported)")
    return 0
