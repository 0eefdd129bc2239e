"""Speed switches for training and the arithmetic of model-FLOPs utilisation (MFU).

None of the switches changes what is computed beyond floating-point rounding; each is tested for equal
losses against the plain path (tests/test_speed.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models.sizes import matmul_parameters  # noqa: F401  (N of 6 N T, also used offline)


ATTENTION_KERNELS = ("sdpa", "eager", "flash_attention_2")


@dataclass
class SpeedSpec:
    """How the training step runs, and the peak that MFU is measured against.

    Args:
        attn_implementation: transformers' attention kernel: ``sdpa`` (PyTorch scaled-dot-product attention,
            which picks a flash or memory-efficient kernel on a GPU), ``eager`` (plain matmuls), or
            ``flash_attention_2`` (needs the flash-attn package and a GPU).
        activation_checkpointing: recompute each layer's activations during backward (less memory, about a
            third more compute).
        compile: ``torch.compile`` the model for training and validation steps; live measurements use the
            uncompiled module, which holds the same weights.
        fused_adamw: AdamW's fused kernel (one kernel for the whole update).
        peak_tflops: the peak of one device in TFLOP/s for MFU; None takes Lightning's table for the device
            and the trainer's precision (A100, H100, ...; H200 from this module's DENSE_PEAKS); without a known peak (a CPU) MFU is not logged.
    """

    attn_implementation: str = "sdpa"
    activation_checkpointing: bool = False
    compile: bool = False
    fused_adamw: bool = False
    peak_tflops: float | None = None

    def __post_init__(self):
        if self.attn_implementation not in ATTENTION_KERNELS:
            raise ValueError(f"speed.attn_implementation {self.attn_implementation!r} is not one of {', '.join(ATTENTION_KERNELS)}")
        if self.peak_tflops is not None and self.peak_tflops <= 0:
            raise ValueError(f"speed.peak_tflops must be positive (TFLOP/s of one device), got {self.peak_tflops}")


def model_flops_per_token(parameters: int, vocab: int, num_layers: int, d_model: int, context: int,
                          tied: bool = False) -> int:
    """Training FLOPs per token: 6 N + 12 L d T (PaLM, Chowdhery et al. 2022, appendix B).

    N = :func:`matmul_parameters` (all but the input embedding; the output head counts). 12 L d T is attention's score and value
    products (forward and backward) over the full T x T square, as PaLM counts them, not halved for the
    causal mask.
    """
    return 6 * matmul_parameters(parameters, vocab, d_model, tied) + 12 * num_layers * d_model * context


# Dense peaks (FLOP/s) of chips whose entry in Lightning's table is missing or wrong. NVIDIA's H200 datasheet
# (2024) gives tensor-core rates "with sparsity": halved here to dense, as Lightning's H100 entries are (so the
# H200 SXM equals the H100 SXM, which has the same tensor cores). Lightning 2.6 lists only "h200 sxm1"/"nvl1" and
# with the sparse rates, so the plain "NVIDIA H200" found no peak and MFU went unlogged. Most specific name first.
DENSE_PEAKS = {
    "h200 nvl": {"float32": 60.0e12, "tfloat32": 417.5e12, "bfloat16": 835.5e12, "float16": 835.5e12},
    "h200": {"float32": 67.0e12, "tfloat32": 494.7e12, "bfloat16": 989.4e12, "float16": 989.4e12},
}


def dense_peak(device_name: str, dtype: str) -> float | None:
    """This project's dense peak for a chip name (``torch.cuda.get_device_name``) and compute dtype name
    (``bfloat16``, ``float16``, ``float32``, ``tfloat32``); None where :data:`DENSE_PEAKS` has no entry."""
    name = device_name.lower()
    for chip, peaks in DENSE_PEAKS.items():
        if chip in name:
            return peaks.get(dtype)
    return None


def peak_flops(trainer, speed: SpeedSpec) -> float | None:
    """Peak FLOP/s of one device: ``speed.peak_tflops`` if set, else :data:`DENSE_PEAKS`, else Lightning's table
    (None where unknown)."""
    if speed.peak_tflops is not None:
        return speed.peak_tflops * 1e12
    device = trainer.strategy.root_device
    if device.type != "cuda":
        return None
    import torch
    from lightning.fabric.utilities.throughput import get_available_flops
    from lightning.pytorch.callbacks.throughput_monitor import _plugin_to_compute_dtype

    dtype = _plugin_to_compute_dtype(trainer.precision_plugin)
    name = str(dtype).removeprefix("torch.")
    if dtype is torch.float32 and torch.get_float32_matmul_precision() != "highest":
        name = "tfloat32"  # TF32 tensor cores, as Lightning counts them
    ours = dense_peak(torch.cuda.get_device_name(device), name)
    return ours if ours is not None else get_available_flops(device, dtype)
