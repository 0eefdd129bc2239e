"""The run's CSV and TensorBoard logs, continued (not restarted) by a resumed run.

Lightning's CSV logger deletes ``metrics.csv`` when its directory is not empty, and a TensorBoard directory
keeps the events a killed run wrote after its last checkpoint, which the resumed run then writes again.
Here each logger reports, when a resume checkpoint is committed, how far its files go (``checkpoint_state``,
recorded beside the checkpoint by ``ResumeCheckpoint``), and a run resumed from that checkpoint first cuts
its files back to that point (``rewind``): every row before the checkpoint is kept, none is written twice.

``step`` fixes the step of every row, for commands that evaluate one checkpoint (``validate``): their rows
carry the checkpoint's step, not Lightning's step counter (0 outside fit).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

from ..atomic import atomic_path


class _AppendingCSVWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing ``metrics.csv`` is continued, and rewritten only atomically."""

    def _check_log_dir_exists(self) -> None:  # Lightning's deletes the file; called by __init__
        self.rows_written = 0
        path = Path(self.metrics_file_path)
        if path.is_file():
            header, rows = _read_csv(path)
            self.metrics_keys, self.rows_written = header, len(rows)

    def rewind(self, rows: int) -> None:
        """Keep the first ``rows`` data rows of ``metrics.csv`` (those written before the checkpoint)."""
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        header, kept = _read_csv(path)
        if len(kept) > rows:
            kept = kept[:rows]
            _write_csv(path, header, kept)
        self.metrics_keys, self.rows_written = header, len(kept)

    def save(self) -> None:
        if not self.metrics:
            return
        path = Path(self.metrics_file_path)
        new_keys = self._record_new_keys()
        if path.is_file() and not new_keys:
            with open(path, "a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=self.metrics_keys).writerows(self.metrics)
        else:
            earlier = _read_csv(path)[1] if path.is_file() else []
            _write_csv(path, self.metrics_keys, earlier + self.metrics)
        self.rows_written += len(self.metrics)
        self.metrics = []


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _write_csv(path: Path, header: list[str], rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


class RunCSVLogger(CSVLogger):
    """``<dir>/csv/metrics.csv``, continued across resumes."""

    def __init__(self, save_dir: str | os.PathLike, step: int | None = None):
        super().__init__(save_dir=str(save_dir), name="csv", version="")
        self.fixed_step = step

    @property
    def experiment(self) -> _AppendingCSVWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingCSVWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def log_metrics(self, metrics, step: int | None = None) -> None:
        super().log_metrics(metrics, self.fixed_step if self.fixed_step is not None else step)

    def checkpoint_state(self) -> dict:
        self.save()
        return {"rows": self.experiment.rows_written}

    def rewind(self, state: dict) -> None:
        self.experiment.rewind(int(state.get("rows", 0)))


class RunTensorBoardLogger(TensorBoardLogger):
    """``<dir>/tensorboard``: one event file per session; a resume truncates the earlier files to the checkpoint."""

    def __init__(self, save_dir: str | os.PathLike, step: int | None = None):
        # no hp_metric: every session would add a placeholder point at step 0
        super().__init__(save_dir=str(save_dir), name="tensorboard", version="", default_hp_metric=False)
        self.fixed_step = step

    def _event_files(self) -> list[Path]:
        return sorted(Path(self.log_dir).glob("events.out.tfevents.*"))

    @rank_zero_only
    def log_metrics(self, metrics, step: int | None = None) -> None:
        super().log_metrics(metrics, self.fixed_step if self.fixed_step is not None else step)

    def checkpoint_state(self) -> dict:
        if self._experiment is not None:
            self._experiment.flush()  # synchronous: every event so far is in the file
        return {"sizes": {p.name: p.stat().st_size for p in self._event_files()}}

    def rewind(self, state: dict) -> None:
        """Cut each event file back to its size at the checkpoint (record boundaries) and remove later files."""
        sizes = state.get("sizes", {})
        for path in self._event_files():
            if path.name not in sizes:
                path.unlink()
            elif path.stat().st_size > sizes[path.name]:
                os.truncate(path, sizes[path.name])
