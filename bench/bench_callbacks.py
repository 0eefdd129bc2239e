"""Overhead of live measurement: the default config trained with its callbacks on and off, same steps.

Runs alternate (off, on, off, on, ...) so that slow phases of a shared machine hit both sides; each run is a
whole ``fit`` through the real CLI (data preparation cached before the clock starts). Three numbers, medians
over the pairs:

- wall time on/off: what a user waits for; on a shared 2-core machine single runs swing by 10% either way;
- CPU time on/off (user + system time of all the process's threads): the work the callbacks add, which other
  jobs on the machine do not inflate (they take CPU away, which shows in wall time only);
- the callbacks' own measuring time (probe capture, CKA, SVDs, activation files, table writes, the
  CKA-to-final pass), recorded by themselves, as a share of the run.

Default: the demo config as ``make train`` runs it (600 steps, 14 measurement steps). Target: <= 3%.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

# passive OpenMP waiting: spinning threads would bill idle waits as CPU time (and slow a shared machine)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from lmdynamics.commands.fit import main as cli

OFF = ["--convergence.enabled", "false", "--weight_rank.enabled", "false", "--head_rank.enabled", "false"]


def measure_seconds(run: Path) -> float:
    """Wall time the measurement callbacks recorded for themselves (rows metric ``measure_seconds``)."""
    from lmdynamics import store

    table = store.read_table(store.table_path(run))
    return float(table[table.metric == "measure_seconds"].value.sum())


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return usage.ru_utime + usage.ru_stime


def fit_seconds(root: str, name: str, steps: int | None, extra: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one ``fit`` of the demo config."""
    args = ["fit", "--config", "configs/train/demo.yaml", "--run.root", root, "--run.name", name,
            "--run.report", "false", "--run.loggers", "[csv]",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", *extra]
    if steps is not None:
        args += ["--trainer.max_steps", str(steps)]
    wall, cpu = time.perf_counter(), cpu_seconds()
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli(args)
    if code:
        raise SystemExit(f"benchmark run {name} failed with exit code {code}")
    return time.perf_counter() - wall, cpu_seconds() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="40 steps, one pair (smoke run)")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the config's 600)")
    ap.add_argument("--repeats", type=int, default=3, help="on/off pairs (default 3)")
    args = ap.parse_args()
    steps, repeats = (40, 1) if args.quick else (args.steps, args.repeats)
    fit_seconds(tempfile.mkdtemp(), "warm", 2, OFF)  # build corpus, tokenizer and token caches once
    pairs = []
    with tempfile.TemporaryDirectory() as root:
        for i in range(repeats):
            off = fit_seconds(root, f"off{i}", steps, OFF)
            on = fit_seconds(root, f"on{i}", steps, [])
            inside = measure_seconds(Path(root) / f"on{i}")
            pairs.append((off, on, inside))
        measured = len(list((Path(root) / "on0" / "activations").glob("*.safetensors")))
    print(f"demo config, {steps or 'default (600)'} steps, {measured} measurement steps, {repeats} on/off pair(s)")
    print(f"{'pair':<6}{'wall off s':>11}{'wall on s':>11}{'wall on/off':>13}{'CPU off s':>11}{'CPU on s':>11}"
          f"{'CPU on/off':>12}{'inside s':>10}{'inside/wall':>13}")
    wall_r, cpu_r, share = [], [], []
    for i, ((w0, c0), (w1, c1), inside) in enumerate(pairs):
        wall_r.append(w1 / w0 - 1)
        cpu_r.append(c1 / c0 - 1)
        share.append(inside / w1)
        print(f"{i:<6}{w0:>11.1f}{w1:>11.1f}{100 * wall_r[-1]:>+12.2f}%{c0:>11.1f}{c1:>11.1f}{100 * cpu_r[-1]:>+11.2f}%"
              f"{inside:>10.1f}{100 * share[-1]:>12.2f}%")
    med = statistics.median
    print(f"median overhead: wall {100 * med(wall_r):+.2f}%, CPU time {100 * med(cpu_r):+.2f}%, "
          f"measuring time inside the callbacks {100 * med(share):.2f}% of the run   (target <= 3%)")


if __name__ == "__main__":
    main()
