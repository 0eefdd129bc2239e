"""Sweeps: a grid of training runs expanded into named runs, validated, then run by N worker processes.

``python train/sweep.py --config sweep.yaml [--workers N] [--print-commands]``. The sweep file:

```yaml
name: bottleneck                 # run-name prefix
root: runs/bottleneck            # run.root of every run (each run is a normal run directory under it)
configs: [configs/train/interventions/synthetic.yaml]   # training configs layered first (paths from the cwd)
set: {trainer.max_steps: 400}    # dotted keys fixed for every run
workers: 2                       # parallel runs (processes); --workers overrides
grid:                            # a mapping, or a list of mappings whose runs are pooled
  - model.model.hidden_size: [8, 16, 32, 64]    # an axis: a dotted config key and its values
    seed_everything: [1, 2]
  - model.model.hidden_size: [8]
    intervention:                # an axis of named bundles (any name): each value sets several keys
      mos: {model.model.head.kind: mos, model.model.head.components: 4}
      low_rank: {model.model.head.kind: low_rank, model.model.head.rank: 4}
```

Each combination becomes a run named ``<name>-<part>-<part>...`` (``hidden_size8``, ``seed_everything1``, or
the bundle's name) and one command ``train/run.py fit --config ... --run.root ROOT --run.name NAME --key
value ...``. Every run is checked first with the real CLI's dry run (``--run.dry_run true``): a typo'd key,
an unknown intervention, a rank larger than d stops the sweep in one line before anything runs or is
written. Resumable: a run that finished (marker ``ROOT/.sweep/NAME.done``) is skipped, one that was
interrupted is resumed with ``--ckpt_path last`` (the CLI starts it again when it had no checkpoint yet);
each run's output goes to ``ROOT/.sweep/NAME.log``. ``--print-commands`` prints the commands for a
scheduler instead (one a line) and runs nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import itertools
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RUN_SCRIPT = ROOT / "train" / "run.py"
SWEEP_KEYS = {"name", "root", "configs", "set", "workers", "grid"}
MARKERS = ".sweep"


class SweepError(ValueError):
    """A sweep file that cannot be run: one line for people."""


@dataclass
class PlannedRun:
    name: str
    settings: dict  # dotted key -> value, in the order they are applied
    args: list[str] = field(default_factory=list)


@dataclass
class Sweep:
    name: str
    root: Path
    configs: list[str]
    runs: list[PlannedRun]
    workers: int = 1

    def command(self, run: PlannedRun, resume: bool = False) -> list[str]:
        cmd = [sys.executable, str(RUN_SCRIPT), *self.cli_args(run)]
        return cmd + (["--ckpt_path", "last"] if resume else [])

    def cli_args(self, run: PlannedRun) -> list[str]:
        args = ["fit"]
        for c in self.configs:
            args += ["--config", c]
        return args + ["--run.root", str(self.root), "--run.name", run.name, *run.args]

    def marker(self, run: PlannedRun) -> Path:
        return self.root / MARKERS / f"{run.name}.done"

    def log(self, run: PlannedRun) -> Path:
        return self.root / MARKERS / f"{run.name}.log"

    def state(self, run: PlannedRun) -> str:
        """``done``, ``started`` (its directory exists: resume it) or ``new``."""
        if self.marker(run).is_file():
            return "done"
        d = self.root / run.name
        return "started" if d.is_dir() and any(d.iterdir()) else "new"


def _cli_value(value) -> str:
    """A value as the CLI parses it (YAML): strings as they are, everything else as JSON (a YAML subset)."""
    return value if isinstance(value, str) else json.dumps(value)


def _part(key: str, value) -> str:
    leaf = key.split(".")[-1]
    text = f"{leaf}{value}" if not isinstance(value, (dict, list)) else f"{leaf}{_digest(value)}"
    return re.sub(r"[^A-Za-z0-9._+=]", "_", text)


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:8]


def _axes(grid: dict) -> list[list[tuple[str, dict]]]:
    """Each axis as a list of ``(name part, settings)``."""
    axes = []
    for key, values in grid.items():
        if isinstance(values, dict):  # named bundles
            if not values or not all(isinstance(v, dict) for v in values.values()):
                raise SweepError(f"sweep grid axis {key!r}: a bundle axis maps names to settings (name: {{key: value}})")
            axes.append([(str(name), dict(bundle)) for name, bundle in values.items()])
        elif isinstance(values, list) and values:
            axes.append([(_part(key, v), {key: v}) for v in values])
        else:
            raise SweepError(f"sweep grid axis {key!r} must be a non-empty list of values or a mapping of named bundles, got {values!r}")
    return axes


def expand(spec: dict) -> Sweep:
    """The runs of a sweep file's contents (no validation against the training CLI yet)."""
    if not isinstance(spec, dict):
        raise SweepError("a sweep file is a mapping with name, root, configs, set, workers and grid")
    unknown = set(spec) - SWEEP_KEYS
    if unknown:
        raise SweepError(f"sweep file: unknown key(s) {sorted(unknown)}; a sweep has {sorted(SWEEP_KEYS)}")
    name = str(spec.get("name") or "sweep")
    configs = spec.get("configs") or []
    configs = [configs] if isinstance(configs, str) else list(configs)
    for c in configs:
        if not Path(c).is_file():
            raise SweepError(f"sweep configs: {c} does not exist (paths are taken from the current directory)")
    fixed = dict(spec.get("set") or {})
    grids = spec.get("grid") or [{}]
    grids = [grids] if isinstance(grids, dict) else grids
    runs: dict[str, PlannedRun] = {}
    for grid in grids:
        if not isinstance(grid, dict):
            raise SweepError(f"sweep grid: each grid is a mapping of axes, got {grid!r}")
        for combo in itertools.product(*_axes(grid)):
            settings = dict(fixed)
            for _, s in combo:
                settings.update(s)
            run_name = "-".join([name, *(p for p, _ in combo)])
            run = PlannedRun(run_name, settings, [a for k, v in settings.items() for a in (f"--{k}", _cli_value(v))])
            if run_name in runs and runs[run_name].settings != settings:
                raise SweepError(f"sweep grid: two different runs are both named {run_name}; give the bundles distinct names")
            runs[run_name] = run
    workers = int(spec.get("workers") or 1)
    return Sweep(name, Path(spec.get("root") or f"runs/{name}"), configs, list(runs.values()), workers)


def load(path: str | os.PathLike) -> Sweep:
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file {path} does not exist")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SweepError(f"sweep file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    return expand(spec)


def validate(sweep: Sweep) -> None:
    """Every run through the real CLI's dry run (in this process): the first failure is one line naming the run."""
    from .training.cli import main as cli_main

    quiet = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)  # Lightning's per-run start-up lines, once per run, would bury the answer
    try:
        for run in sweep.runs:
            _dry_run(cli_main, sweep, run)
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)


def _dry_run(cli_main, sweep: Sweep, run: PlannedRun) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main([*sweep.cli_args(run), "--run.dry_run", "true"])
    if code != 0:
        lines = [ln for ln in err.getvalue().splitlines() if ln.startswith("error")] or err.getvalue().splitlines()[-1:]
        reason = lines[-1].removeprefix("error: ") if lines else f"exit status {code}"
        raise SweepError(f"sweep run {run.name}: {reason}")


def _execute(sweep: Sweep, run: PlannedRun, threads: int) -> tuple[str, int, float]:
    resume = sweep.state(run) == "started"
    log = sweep.log(run)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
    started = time.perf_counter()
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"$ {shlex.join(sweep.command(run, resume))}\n")
        fh.flush()
        code = subprocess.run(sweep.command(run, resume), stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd()).returncode
    if code == 0:
        sweep.marker(run).write_text(json.dumps({"seconds": time.perf_counter() - started, "settings": run.settings}, default=str))
    return run.name, code, time.perf_counter() - started


def run_all(sweep: Sweep, workers: int) -> int:
    todo = [r for r in sweep.runs if sweep.state(r) != "done"]
    skipped = len(sweep.runs) - len(todo)
    print(f"[sweep] {sweep.name}: {len(sweep.runs)} runs under {sweep.root}, {skipped} already done, "
          f"{len(todo)} to run with {workers} worker(s)", flush=True)
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    failed = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for name, code, seconds in pool.map(lambda r: _execute(sweep, r, threads), todo):
            status = "done" if code == 0 else f"FAILED (exit {code}, log {sweep.root / MARKERS / (name + '.log')})"
            print(f"[sweep] {name}: {status} in {seconds:.0f} s", flush=True)
            if code != 0:
                failed.append(name)
    if failed:
        print(f"[sweep] {len(failed)} run(s) failed: {', '.join(failed)}; run the sweep again to resume them", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train/sweep.py", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--config", required=True, help="the sweep file (YAML)")
    parser.add_argument("--workers", type=int, default=None, help="parallel runs (default: the sweep file's, else 1)")
    parser.add_argument("--print-commands", action="store_true", help="print one command per run for a scheduler; run nothing")
    args = parser.parse_args(argv)
    try:
        sweep = load(args.config)
        workers = args.workers if args.workers is not None else sweep.workers
        if workers < 1:
            raise SweepError(f"--workers must be at least 1, got {workers}")
        validate(sweep)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.print_commands:
        for run in sweep.runs:
            state = sweep.state(run)
            prefix = "# done: " if state == "done" else ""
            print(prefix + shlex.join(sweep.command(run, resume=state == "started")))
        return 0
    return run_all(sweep, workers)
