"""Sweeps: a grid of training runs expanded into named runs, validated, then run by N worker processes.

``lmdynamics sweep --config sweep.yaml [--set KEY=VALUE ...] [--workers N] [--print_commands]``. The sweep file:

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
the bundle's name) and one command ``<venv>/bin/lmdynamics fit --config ... --run.root ROOT --run.name NAME
--key value ...``. ``--set KEY=VALUE`` (repeatable; the value read as YAML) overrides every run, after the
file's ``set`` and the grid: it is in each run's ``config.yaml`` and the summary. Every ``--set`` key is
checked against the training config's keys, and every run with the real CLI's dry run (``--run.dry_run
true``): a typo'd key, an unknown intervention, a rank larger than d stops the sweep in one line before
anything runs or is written. Resumable: a run that finished (marker ``ROOT/.sweep/NAME.done``) is skipped,
one that was interrupted is resumed with ``--ckpt_path last`` (the CLI starts it again when it had no
checkpoint yet). Each run's output goes to its own directory, ``ROOT/NAME/sweep.log``. A failed run does not
stop the others. At the end a summary table (run, status, steps, final and best validation loss, excess
loss, saturation, wall time; a failed run's last log line) is printed and written to
``ROOT/sweep_summary.csv``; the sweep exits non-zero when a run failed. ``--print_commands`` prints the
commands for a scheduler instead (one a line: ``cd <here> && <venv>/bin/lmdynamics fit ...``, as it works in a
new shell) and runs nothing.
"""

from __future__ import annotations

import contextlib
import datetime
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

from .console import in_this_directory, lmdynamics_command
from .layout import RunLayout

SWEEP_KEYS = {"name", "root", "configs", "set", "workers", "grid"}
MARKERS = ".sweep"
SUMMARY = "sweep_summary.csv"


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
    overrides: dict = field(default_factory=dict)  # --set KEY=VALUE of the command line, applied to every run

    def command(self, run: PlannedRun, resume: bool = False) -> list[str]:
        cmd = [*lmdynamics_command("fit"), *self.cli_args(run)[1:]]
        return cmd + (["--ckpt_path", "last"] if resume else [])

    def cli_args(self, run: PlannedRun) -> list[str]:
        args = ["fit"]
        for c in self.configs:
            args += ["--config", c]
        return args + ["--run.root", str(self.root), "--run.name", run.name, *run.args]

    def marker(self, run: PlannedRun) -> Path:
        return self.root / MARKERS / f"{run.name}.done"

    def log(self, run: PlannedRun) -> Path:
        return RunLayout(self.root / run.name).sweep_log

    def state(self, run: PlannedRun) -> str:
        """``done``, ``started`` (training wrote to its directory: resume it) or ``new``."""
        if self.marker(run).is_file():
            return "done"
        return "started" if RunLayout(self.root / run.name).started() else "new"


def _cli_value(value) -> str:
    """A value as the CLI parses it (YAML): strings as they are, a YAML date or time as its ISO text, everything
    else as JSON (a YAML subset; a date inside it as a string)."""
    if isinstance(value, str):
        return value
    if isinstance(value, datetime.date):  # datetime.datetime too: YAML reads 2024-01-02 as a date, JSON has none
        return value.isoformat()
    return json.dumps(value, default=str)


def _part(key: str, value) -> str:
    leaf = key.split(".")[-1]
    text = f"{leaf}{value}" if not isinstance(value, (dict, list)) else f"{leaf}{_digest(value)}"
    return re.sub(r"[^A-Za-z0-9._+=]", "_", text)


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:8]  # dates as text


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


def expand(spec: dict, overrides: dict | None = None) -> Sweep:
    """The runs of a sweep file's contents, with ``overrides`` (``--set``) applied last to every run (no
    validation against the training CLI yet)."""
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
            settings.update(overrides or {})
            run_name = "-".join([name, *(p for p, _ in combo)])
            run = PlannedRun(run_name, settings, [a for k, v in settings.items() for a in (f"--{k}", _cli_value(v))])
            if run_name in runs and runs[run_name].settings != settings:
                raise SweepError(f"sweep grid: two different runs are both named {run_name}; give the bundles distinct names")
            runs[run_name] = run
    workers = int(spec.get("workers") or 1)
    return Sweep(name, Path(spec.get("root") or f"runs/{name}"), configs, list(runs.values()), workers, dict(overrides or {}))


def parse_overrides(items: list[str]) -> dict:
    """``--set KEY=VALUE`` items as ``{key: value}`` (the value read as YAML: ``400`` an int, ``mos`` a string)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SweepError(f"--set {item!r}: give KEY=VALUE, e.g. --set trainer.max_steps=400")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def check_override_keys(sweep: Sweep, cli_main) -> None:
    """Each ``--set`` key against the keys of the training config (the CLI's ``--print_config`` of the sweep's
    configs): an unknown one is one line naming it and the keys beside it."""
    if not sweep.overrides:
        return
    from .compare.grouping import flatten

    out, err = io.StringIO(), io.StringIO()
    with _quiet(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli_main(["fit", *(a for c in sweep.configs for a in ("--config", c)), "--print_config"])
        except SystemExit:
            pass
    flat = flatten(yaml.safe_load(out.getvalue()) or {})
    for key in sweep.overrides:
        parts = key.split(".")
        open_ended = any(flat.get(".".join(parts[:i]), 0) is None for i in range(1, len(parts)))
        if key in flat or any(k.startswith(key + ".") for k in flat) or open_ended:
            continue
        for depth in range(len(parts) - 1, -1, -1):
            parent = ".".join(parts[:depth])
            children = sorted({k[len(parent) + 1 if parent else 0:].split(".")[0] for k in flat
                               if not parent or k.startswith(parent + ".")})
            if children:
                where = f"keys under {parent}" if parent else "top-level keys"
                raise SweepError(f"--set {key}: the training config has no such key; {where}: {', '.join(children)}")


def load(path: str | os.PathLike, overrides: dict | None = None) -> Sweep:
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file {path} does not exist")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SweepError(f"sweep file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    return expand(spec, overrides)


@contextlib.contextmanager
def _quiet():
    """Lightning's start-up lines, once per run, would bury the answer."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [q.level for q in loggers]
    for q in loggers:
        q.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for q, level in zip(loggers, levels):
            q.setLevel(level)


def validate(sweep: Sweep, cli_main) -> None:
    """The ``--set`` keys, then every run through the real CLI's dry run (in this process; ``cli_main``:
    ``lmdynamics.commands.fit.main``): the first failure is one line naming the key or the run."""
    check_override_keys(sweep, cli_main)
    with _quiet():
        for run in sweep.runs:
            _dry_run(cli_main, sweep, run)


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
    sweep.marker(run).parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
    started = time.perf_counter()
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"$ {shlex.join(sweep.command(run, resume))}\n")
        fh.flush()
        code = subprocess.run(sweep.command(run, resume), stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd()).returncode
    if code == 0:
        sweep.marker(run).write_text(json.dumps({"seconds": time.perf_counter() - started, "settings": run.settings}, default=str))
    return run.name, code, time.perf_counter() - started


SUMMARY_COLUMNS = ["run", "status", "steps", "final_val_loss", "best_val_loss", "final_excess_loss", "saturation",
                   "seconds", "log", "last_log_line", "overrides"]


def _last_line(path: Path) -> str:
    if not path.is_file():
        return ""
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def summary_row(sweep: Sweep, run: PlannedRun, status: str, seconds: float | None) -> dict:
    """One row of the sweep's summary: the run's numbers from its tidy table (``compare.summarize``); saturation
    ``event`` when the live head monitor flagged one, ``late rise`` when the final validation loss is above its
    best by more than ``compare.RISE_MARGIN``, else ``no``."""
    from . import store
    from .compare.runs import _load, summarize

    row = {"run": run.name, "status": status, "seconds": None if seconds is None else round(seconds, 1),
           "log": str(sweep.log(run)), "overrides": "; ".join(f"{k}={_cli_value(v)}" for k, v in sweep.overrides.items())}
    directory = sweep.root / run.name
    if store.table_path(directory).is_dir():
        numbers = summarize(_load(directory))
        row.update({k: numbers.get(k) for k in ("steps", "final_val_loss", "best_val_loss", "final_excess_loss")})
        row["saturation"] = "event" if numbers["saturation_events"] else ("late rise" if numbers.get("late_rise") else "no")
    if status != "done":
        row["last_log_line"] = _last_line(sweep.log(run))
    return row


def _format_summary(rows: list[dict]) -> str:
    """The summary as an aligned text table (numbers to 4 significant digits)."""
    cols = SUMMARY_COLUMNS[:8]

    def cell(v):
        if v is None or (isinstance(v, float) and v != v):
            return "-"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    cells = [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def write_summary(sweep: Sweep, rows: list[dict]) -> Path:
    import pandas as pd

    from .atomic import write_text_atomic

    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return write_text_atomic(sweep.root / SUMMARY, frame.to_csv(index=False))


def run_all(sweep: Sweep, workers: int) -> int:
    todo = [r for r in sweep.runs if sweep.state(r) != "done"]
    skipped = len(sweep.runs) - len(todo)
    extra = f" (--set {', '.join(f'{k}={_cli_value(v)}' for k, v in sweep.overrides.items())})" if sweep.overrides else ""
    print(f"[sweep] {sweep.name}: {len(sweep.runs)} runs under {sweep.root}{extra}, {skipped} already done, "
          f"{len(todo)} to run with {workers} worker(s); each run's log: {sweep.root}/NAME/sweep.log", flush=True)
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    outcome = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for name, code, seconds in pool.map(lambda r: _execute(sweep, r, threads), todo):
            outcome[name] = (code, seconds)
            status = "done" if code == 0 else f"FAILED (exit {code}, log {sweep.root / name / 'sweep.log'})"
            print(f"[sweep] {name}: {status} in {seconds:.0f} s", flush=True)
    rows = []
    for run in sweep.runs:
        if run.name in outcome:
            code, seconds = outcome[run.name]
            rows.append(summary_row(sweep, run, "done" if code == 0 else f"FAILED (exit {code})", seconds))
        else:
            marker = json.loads(sweep.marker(run).read_text() or "{}")
            rows.append(summary_row(sweep, run, "done (earlier)", marker.get("seconds")))
    path = write_summary(sweep, rows)
    print(_format_summary(rows))
    print(f"[sweep] summary: {path}")
    failed = [r for r in rows if r["status"].startswith("FAILED")]
    for r in failed:
        print(f"[sweep] {r['run']} failed; last line of {r['log']}: {r['last_log_line']}", file=sys.stderr)
    if failed:
        print(f"[sweep] {len(failed)} run(s) failed: {', '.join(r['run'] for r in failed)}; run the sweep again to resume them",
              file=sys.stderr)
        return 1
    return 0


def printed_commands(sweep: Sweep) -> list[str]:
    """One line per run for a scheduler, as it works in a new shell (``cd <here> && <venv>/bin/lmdynamics fit
    ...``); a finished run's line is commented out, an interrupted one resumes."""
    lines = []
    for run in sweep.runs:
        state = sweep.state(run)
        lines.append(("# done: " if state == "done" else "") + in_this_directory(sweep.command(run, resume=state == "started")))
    return lines
