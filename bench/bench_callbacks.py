"""Overhead of live measurement: the default config trained with its callbacks on and off, same steps.

Two numbers from the same runs: the ratio of whole-`fit` wall times (on/off; data preparation is cached
before the clock starts), which on a shared machine carries several percent of noise, and the time the
callbacks record for their own work (probe capture, CKA, SVDs, activation files, table writes, the
CKA-to-final pass at the end) as a share of the run, which does not. The default config measures 14 times in 600 steps; with the default --steps 200 the schedule
(0, 1, 2, ..., 64, 100, 200) measures 10 times in 200 steps, a denser cadence, so the overhead printed is an
upper bound for the default run. Target: <= 3%.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

from lmdynamics.training.cli import main as cli

OFF = ["--convergence.enabled", "false", "--weight_rank.enabled", "false", "--head_rank.enabled", "false"]


def measure_seconds(run: Path) -> float:
    """Wall time the measurement callbacks recorded for themselves (rows metric ``measure_seconds``)."""
    from lmdynamics import store

    table = store.read_table(store.table_path(run))
    return float(table[table.metric == "measure_seconds"].value.sum())


def fit_seconds(root: str, name: str, steps: int, extra: list[str]) -> float:
    args = ["fit", "--config", "configs/train/demo.yaml", "--run.root", root, "--run.name", name,
            "--run.report", "false", "--run.loggers", "[csv]", "--trainer.max_steps", str(steps),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", *extra]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli(args)
    if code:
        raise SystemExit(f"benchmark run {name} failed with exit code {code}")
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="40 steps, one repeat (smoke run)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    steps, repeats = (40, 1) if args.quick else (args.steps, args.repeats)
    fit_seconds(tempfile.mkdtemp(), "warm", 2, OFF)  # build corpus, tokenizer and token caches once
    on, off = [], []
    with tempfile.TemporaryDirectory() as root:
        for i in range(repeats):
            off.append(fit_seconds(root, f"off{i}", steps, OFF))
            on.append(fit_seconds(root, f"on{i}", steps, []))
        measured = sorted(p.name for p in (Path(root) / "on0" / "activations").glob("*.safetensors"))
        inside = [measure_seconds(Path(root) / f"on{i}") for i in range(repeats)]
    a, b = statistics.median(on), statistics.median(off)
    print(f"demo config, {steps} steps, {len(measured)} measurement steps, {repeats} repeat(s)")
    print(f"{'callbacks off':<16}{b:>9.1f} s   runs: {', '.join(f'{x:.1f}' for x in off)}")
    print(f"{'callbacks on':<16}{a:>9.1f} s   runs: {', '.join(f'{x:.1f}' for x in on)}")
    print(f"overhead on/off - 1: {100 * (a / b - 1):+.2f}%   (two runs: machine noise of several % either way)")
    share = [m / t for m, t in zip(inside, on)]
    print(f"time inside the measurement callbacks, same runs: {', '.join(f'{m:.1f} s' for m in inside)}"
          f" = {100 * statistics.median(share):.2f}% of the run with callbacks on   (target <= 3%)")


if __name__ == "__main__":
    main()
