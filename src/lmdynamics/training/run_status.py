"""A run's status markers, read without torch or lightning (``lmdynamics runs``): ``lightning/running.json`` (pid
and host of rank 0), written when training starts and removed when it stops, tells running from interrupted runs;
``lightning/finished.json`` (the last step) says the run's end-of-run work is done."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

RUNNING_FILE = "running.json"
FINISHED_FILE = "finished.json"  # beside last.ckpt: the step whose end-of-run work (CKA-to-final, report) is done


def mark_running(run_dir: Path) -> None:
    """Record the process training the run (rank 0): its pid and host."""
    from ..atomic import write_json_atomic

    write_json_atomic(Path(run_dir) / "lightning" / RUNNING_FILE, {"pid": os.getpid(), "host": socket.gethostname()})


def clear_running(run_dir: Path) -> None:
    (Path(run_dir) / "lightning" / RUNNING_FILE).unlink(missing_ok=True)


def mark_finished(run_dir: Path, step: int) -> None:
    """Record that the run's end-of-run work is complete at ``step`` (its last step)."""
    from ..atomic import write_json_atomic

    write_json_atomic(Path(run_dir) / "lightning" / FINISHED_FILE, {"step": int(step)})


def finished_step(run_dir: Path) -> int | None:
    """The step at which the run's end-of-run work was completed; None if it never was (or was killed during it)."""
    try:
        return int(json.loads((Path(run_dir) / "lightning" / FINISHED_FILE).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
