"""Model-FLOPs utilisation and the live measurements' cost, through the real training CLI.

Trains the same config twice, measurements on and off, in alternating order, and prints the median
tokens/s, model TFLOP/s and MFU of each (medians over steps after ``--skip``, so checkpoint writes and
compilation do not count) and the on/off step-time ratio. On a GPU the default is pythia-160m with the
one-GPU overlay (bf16, SDPA attention, torch.compile, fused AdamW) on the bundled corpus:

    .venv/bin/python bench/bench_mfu.py                      # GPU: pythia-160m, 1gpu-bf16 overlay
    .venv/bin/python bench/bench_mfu.py --quick              # CPU smoke run: the demo model, 30 steps

MFU is logged only where the peak is known (Lightning's table for the GPU and precision, or
``--peak-tflops``); on a CPU give ``--peak-tflops`` to see the arithmetic.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OFF = ["--convergence.enabled", "false", "--weight_rank.enabled", "false", "--head_rank.enabled", "false"]


def run(config_args: list[str], steps: int, root: Path, name: str, measure: bool, extra: list[str]) -> dict[str, list[float]]:
    args = [sys.executable, str(ROOT / "train" / "run.py"), "fit", *config_args, "--run.root", str(root), "--run.name", name,
            "--trainer.max_steps", str(steps), "--trainer.log_every_n_steps", "1", "--run.report", "false",
            "--trainer.enable_progress_bar", "false", *([] if measure else OFF), *extra]
    res = subprocess.run(args, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"training failed:\n{res.stderr[-3000:]}")
    sys.path.insert(0, str(ROOT / "src"))
    from lmdynamics import store

    table = store.read_table(store.table_path(root / name))
    return {m: g.sort_values("step").value.tolist() for m, g in table[table.layer == -1].groupby("metric")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CPU smoke run: the demo model, 30 steps, one pair")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--skip", type=int, default=20, help="steps left out of the medians (compilation, warm-up)")
    ap.add_argument("--pairs", type=int, default=2, help="alternating on/off pairs")
    ap.add_argument("--global-batch", type=int, default=32,
                    help="sequences per optimizer step on the GPU (default 32 = the overlay's batch_size: no accumulation, "
                         "so a step is short; Pythia's 1024 would make each step 32 micro-batches)")
    ap.add_argument("--peak-tflops", type=float, help="peak of one device (default: Lightning's table for the GPU)")
    args = ap.parse_args()
    if args.quick or not torch.cuda.is_available():
        config = ["--config", str(ROOT / "configs/train/demo.yaml")]
        args.steps, args.skip, args.pairs = (30, 5, 1) if args.quick else (args.steps, args.skip, args.pairs)
    else:
        config = ["--config", str(ROOT / "configs/train/pythia-160m.yaml"), "--config",
                  str(ROOT / "configs/train/scale/1gpu-bf16.yaml"), "--data.source", "python-docs",
                  "--data.streaming", "false", "--data.tokenizer", "bpe:4096", "--trainer.val_check_interval", "100000",
                  "--data.global_batch_size", str(args.global_batch),
                  "--probe.num_sequences", "16"]  # the bundled corpus holds 19 validation blocks of 2048 tokens
    extra = ["--model.speed.peak_tflops", str(args.peak_tflops)] if args.peak_tflops else []
    on, off = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.pairs):
            for measure, out in ((False, off), (True, on)) if i % 2 == 0 else ((True, on), (False, off)):
                out.append(run(config, args.steps, Path(tmp), f"{'on' if measure else 'off'}{i}", measure, extra))

    def median(runs, metric):
        values = [v for r in runs for v in r.get(metric, [])[args.skip:]]
        return statistics.median(values) if values else float("nan")

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"device: {device}   {args.steps} steps x {args.pairs} pair(s), medians over steps after {args.skip}")
    for label, runs in (("measurements off", off), ("measurements on", on)):
        print(f"{label:<18} tokens/s {median(runs, 'tokens_per_sec'):>12,.0f}   model TFLOP/s {median(runs, 'model_tflops'):8.2f}"
              f"   MFU {median(runs, 'mfu'):6.1%}")
    ratio = median(off, "tokens_per_sec") / median(on, "tokens_per_sec")
    share = statistics.median(r["measure_share"][-1] for r in on)
    print(f"step time on/off: {ratio:.3f}   measurements' own share of the on run's wall time: {share:.2%}")


if __name__ == "__main__":
    main()
