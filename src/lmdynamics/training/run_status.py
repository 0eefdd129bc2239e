"""The marker of a run being trained: ``lightning/running.json`` (pid and host of rank 0), written when training
starts and removed when it stops; ``lmdynamics runs`` reads it to tell running from interrupted runs."""

from __future__ import annotations

import os
import socket
from pathlib import Path

RUNNING_FILE = "running.json"


def mark_running(run_dir: Path) -> None:
    """Record the process training the run (rank 0): its pid and host."""
    from ..atomic import write_json_atomic

    write_json_atomic(Path(run_dir) / "lightning" / RUNNING_FILE, {"pid": os.getpid(), "host": socket.gethostname()})


def clear_running(run_dir: Path) -> None:
    (Path(run_dir) / "lightning" / RUNNING_FILE).unlink(missing_ok=True)
