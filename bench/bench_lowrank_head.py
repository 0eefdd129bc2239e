"""Benchmark: where ``lmdynamics lowrank-head`` spends its time (a script, not a test).

Runs the sweep of one checkpoint (``lmdynamics.saturation.lowrank_head.run``, the command's code path) and
prints the wall time of each phase: loading the checkpoint, tokenising the corpus, the frozen backbone's hidden
states, training (and evaluating) the heads; with each phase's share of the whole and, for the heads, the
seconds per head step.

Usage: python bench/bench_lowrank_head.py --checkpoint runs/demo/checkpoints/step00000600 [--steps 300]
       [--ranks 8,16] [--train-blocks 1024]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from lmdynamics.saturation import lowrank_head as lh  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--ranks", default="", help="comma-separated ranks (default: the command's log grid)")
    ap.add_argument("--train-blocks", type=int, default=1024)
    args = ap.parse_args(argv)
    ranks = [int(r) for r in args.ranks.split(",") if r.strip()] or None
    progress = lh.Progress(stream=None)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        _, result = lh.run(args.checkpoint, out, ranks=ranks, train_blocks=args.train_blocks, steps=args.steps,
                           progress=progress)
    total = time.perf_counter() - start
    heads = len(result["ranks"]) + ("full_trained" in result)
    print(f"lowrank-head on {args.checkpoint}: {total:.1f} s in all, {heads} heads x {args.steps} steps")
    for name, seconds in progress.seconds.items():
        print(f"  {name:<40} {seconds:8.2f} s  {seconds / total:6.1%}")
    rest = total - sum(progress.seconds.values())
    print(f"  {'figure, CSV and table rows':<40} {rest:8.2f} s  {rest / total:6.1%}")
    train = progress.seconds.get("training heads", 0.0)
    print(f"  seconds per head step: {train / max(heads * args.steps, 1):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
