"""GPU peak numbers (each with its source) and roofline time estimates for prefill and decode.

Peaks are datasheet dense (no 2:4 sparsity) bf16 tensor-core rates. Real kernels reach a fraction of
them: on this project's H100 an 8192³ bf16 matmul ran at 758-798 TFLOP/s (bench/README.md), so treat
roofline times as lower bounds; `costlaw recommend --gpu` uses calibrated laws where the study has them.
"""

from __future__ import annotations

from dataclasses import dataclass

from costlaw.costmodel.core.errors import ConfigError


@dataclass(frozen=True)
class GPU:
    name: str
    peak_bf16_flops: float  # dense, FLOP/s
    hbm_bytes_per_s: float
    memory_bytes: int
    match: tuple[str, ...]  # substrings of torch.cuda.get_device_name() that identify it
    source: str


GB = 10**9
GPUS: dict[str, GPU] = {g.name: g for g in [
    GPU("H100-SXM", 989.4e12, 3.35e12, 80 * GB, ("H100 80GB HBM3", "H100 SXM", "H100"),
        "NVIDIA H100 Tensor Core GPU datasheet: SXM5 BF16 1,979 TFLOPS with sparsity (989.4 dense), 3.35 TB/s, 80 GB"),
    GPU("H100-PCIe", 756.5e12, 2.0e12, 80 * GB, ("H100 PCIe",),
        "NVIDIA H100 Tensor Core GPU datasheet: PCIe BF16 1,513 TFLOPS with sparsity (756.5 dense), 2.0 TB/s, 80 GB"),
    GPU("H200", 989.4e12, 4.8e12, 141 * GB, ("H200",),
        "NVIDIA H200 Tensor Core GPU datasheet: SXM BF16 1,979 TFLOPS with sparsity (989.4 dense), 4.8 TB/s, 141 GB"),
    GPU("A100", 312e12, 2.039e12, 80 * GB, ("A100",),
        "NVIDIA A100 Tensor Core GPU datasheet: 80GB SXM BF16 312 TFLOPS dense, 2,039 GB/s"),
    GPU("A800", 312e12, 2.039e12, 80 * GB, ("A800",),
        "NVIDIA A800 Tensor Core GPU datasheet: 80GB SXM BF16 312 TFLOPS dense, 2,039 GB/s"),
    GPU("RTX-4090", 165.2e12, 1.008e12, 24 * GB, ("RTX 4090",),
        "NVIDIA Ada Lovelace architecture whitepaper, Appendix A: RTX 4090 peak BF16 tensor 165.2 TFLOPS "
        "(FP32 accumulate, dense), 1,008 GB/s GDDR6X, 24 GB"),
    # before B200: a GB200's device name contains "B200"
    GPU("GB200", 2.5e15, 8.0e12, 186 * GB, ("GB200",),
        "NVIDIA GB200 NVL72 datasheet, per GPU of its 72: FP16/BF16 360 PFLOPS with sparsity (2.5 PFLOPS dense "
        "each), up to 13.4 TB HBM3e at 576 TB/s (186 GB, 8 TB/s each)"),
    GPU("B200", 2.25e15, 8.0e12, 180 * GB, ("B200",),
        "NVIDIA HGX B200 datasheet (HGX platform page), per GPU of its 8: FP16/BF16 36 PFLOPS with sparsity "
        "(2.25 PFLOPS dense each), 1.4 TB HBM3e at 64 TB/s (180 GB, 8 TB/s each)"),
    GPU("MI300X", 1307.4e12, 5.3e12, 192 * GB, ("MI300X",),
        "AMD Instinct MI300X accelerator datasheet: peak BF16 1,307.4 TFLOPS dense (2,614.9 with sparsity), "
        "192 GB HBM3, 5.3 TB/s"),
    GPU("L40S", 362.05e12, 864e9, 48 * GB, ("L40S",),
        "NVIDIA L40S datasheet: BF16 tensor 362.05 TFLOPS dense (733 with sparsity), 48 GB GDDR6, 864 GB/s"),
    # after H200: an H200's device name contains "H20"
    GPU("H20", 148e12, 4.0e12, 96 * GB, ("H20",),
        "NVIDIA H20 partner specification (no nvidia.com datasheet; figures as the press reported them): "
        "FP16/BF16 148 TFLOPS dense, 96 GB HBM3, 4.0 TB/s"),
]}


def gpu(name: str) -> GPU:
    """Look up by table name (case-insensitive, `H100` means H100-SXM) or by a torch device name."""
    key = name.strip().lower()
    for g in GPUS.values():
        if g.name.lower() == key:
            return g
    for g in GPUS.values():  # device names like "NVIDIA H100 80GB HBM3"; the table lists specific ones first
        if any(m.lower() in key for m in g.match):
            return g
    raise ConfigError("gpu", f"unknown GPU {name!r}; choose one of {', '.join(GPUS)}")


def roofline(cfg, T: int, gpu_name: str, dtype: str = "bf16", generate: int = 0) -> dict:
    """Batch-1 lower-bound times: prefill of T tokens, and one decode step at context T."""
    from costlaw.costmodel.costs import c_infer, dtype_bytes, kv_cache_bytes, params_total, prefill_flops

    weights = params_total(cfg) * dtype_bytes(dtype)
    return roofline_times(gpu_name, prefill_flops(cfg, T), c_infer(cfg, T), weights, kv_cache_bytes(cfg, T, dtype))


def roofline_times(gpu_name: str, prefill_flops: float, decode_flops: float, weight_bytes: float, kv_bytes: float,
                   decode_weight_bytes: float | None = None) -> dict:
    """The roofline of one prefill and one decode step from their FLOPs and the bytes they read: each takes the
    longer of its compute at peak and its reads at full bandwidth. `decode_weight_bytes` are the weights one decode
    step reads when that is fewer than those held (a mixture of experts reads only its routed experts)."""
    g = gpu(gpu_name)
    step_weights = weight_bytes if decode_weight_bytes is None else decode_weight_bytes
    prefill_s = max(prefill_flops / g.peak_bf16_flops, (weight_bytes + kv_bytes) / g.hbm_bytes_per_s)
    decode_s = max(decode_flops / g.peak_bf16_flops, (step_weights + kv_bytes) / g.hbm_bytes_per_s)
    return {
        "gpu": g.name,
        "prefill_s": prefill_s,
        "decode_s_per_token": decode_s,
        "decode_tokens_per_s": 1.0 / decode_s,
        "fits_in_memory": weight_bytes + kv_bytes <= g.memory_bytes,
    }
