"""``lmdynamics runs [ROOT]``: the training runs under ROOT (default ``runs``), one line each.

For each run directory (one holding ``run.json``): its model, steps done / planned, status, final and best
validation loss, and size on disk. Steps done are the last training step in its tidy table; planned is
``max_steps`` of ``run.json``. Status: ``finished`` once its end-of-run work is done (``lightning/finished.json``),
``running`` while the process training it is alive (``lightning/running.json``, written at the start of
training and removed when training stops; a process on another host cannot be checked and is taken as
running), ``interrupted`` otherwise (a run from before ``finished.json`` whose resume checkpoint is at its last
step counts as finished).

The command: ``lmdynamics.commands.runs``.
"""

from __future__ import annotations

import json
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from .training.run_status import RUNNING_FILE, finished_step

TRAINING_METRICS = ("train_loss", "val_loss")


@dataclass
class RunSummary:
    name: str
    model: str
    steps_done: int
    steps_planned: int | None
    status: str
    final_val_loss: float
    best_val_loss: float
    best_val_step: int | None
    bytes_on_disk: int


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def run_status(run_dir: Path, planned: int | None) -> str:
    """finished, running or interrupted (see the module docstring); a run written before ``finished.json``
    existed is finished when its resume checkpoint is at its last step."""
    if finished_step(run_dir) is not None:
        return "finished"
    try:
        running = json.loads((Path(run_dir) / "lightning" / RUNNING_FILE).read_text())
    except (OSError, ValueError):
        running = None
    if running is not None and running.get("host") != socket.gethostname():
        return f"running (on {running.get('host')})"
    if running is not None and _alive(int(running.get("pid", -1))):
        return "running"
    from .training.resume import checkpoint_step  # torch: only for a run without a finished or running marker

    saved = checkpoint_step(Path(run_dir) / "lightning" / "last.ckpt")
    return "finished" if planned is not None and saved is not None and saved >= planned else "interrupted"


def size_on_disk(directory: Path) -> int:
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def summarize(run_dir: Path) -> RunSummary:
    """One run's line, from ``run.json`` and its tidy table (training and validation rows only)."""
    from . import store
    from .compare.runs import final_and_best

    info = json.loads((run_dir / "run.json").read_text())
    table = store.read_table(store.table_path(run_dir), metrics=TRAINING_METRICS)
    steps = int(table.step.max()) if len(table) else 0
    final, best, best_step = final_and_best(table) or (math.nan, math.nan, None)
    return RunSummary(
        name=run_dir.name, model=str(info.get("model", "?")), steps_done=steps,
        steps_planned=info.get("max_steps"), status=run_status(run_dir, info.get("max_steps")),
        final_val_loss=final, best_val_loss=best, best_val_step=best_step, bytes_on_disk=size_on_disk(run_dir))


def find_runs(root: Path) -> list[Path]:
    """Run directories directly under ``root`` (or ``root`` itself when it is one), sorted by name."""
    if (root / "run.json").is_file():
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "run.json").is_file())


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def format_table(rows: list[RunSummary]) -> str:
    head = ["run", "model", "steps", "status", "final val loss", "best val loss (step)", "size"]
    body = []
    for r in rows:
        planned = r.steps_planned if r.steps_planned is not None else "?"
        best = "-" if r.best_val_step is None else f"{r.best_val_loss:.4f} ({r.best_val_step})"
        final = "-" if math.isnan(r.final_val_loss) else f"{r.final_val_loss:.4f}"
        body.append([r.name, r.model, f"{r.steps_done}/{planned}", r.status, final, best, human_size(r.bytes_on_disk)])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in [head, *body])
