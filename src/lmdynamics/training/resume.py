"""The resume checkpoint (``<run>/lightning/last.ckpt``): when it is taken, how it is written, where the
run's logs stood at that point, and what an interrupted run tells its user.

A run resumed from it must continue as if it had never stopped, logs included. Lightning takes the
checkpoint at the end of a step's last micro-batch (``on_train_batch_end``), but logs that step's training
values, and runs the step's validation, only afterwards. So the checkpoint is first written under a
hidden temporary name, and committed (renamed to ``last.ckpt``) once the step is complete, at the start of
the next batch or at the end of training: the logs are flushed, and how far each of them goes is recorded
in ``log_positions.json`` beside it, under the checkpoint's step. A resumed run cuts each log back to that
point (``training.loggers``): rows before it are kept, rows the killed process wrote later are written
again, none twice. A kill at any moment leaves a committed checkpoint whose positions are recorded.

Ctrl-C (SIGINT) and a scheduler's SIGTERM (SLURM sends it before the kill at the end of a job's time) do not
stop training mid-step: during training they only request a stop (``StopOnSignal``). The step then running
completes, its checkpoint is taken and committed exactly as a scheduled one, and the run exits with
128 + the signal's number, printing the command that resumes it. Under DDP the ranks agree at every step
whether any of them was signalled, so all stop after the same step. A second signal stops at once.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import threading
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint

from ..atomic import write_json_atomic
from .run_status import clear_running, mark_running

POSITIONS_FILE = "log_positions.json"
KEEP_POSITIONS = 4  # steps whose log positions are kept (the committed checkpoint's among them)


class ResumeCheckpoint(ModelCheckpoint):
    """``<dirpath>/last.ckpt`` every ``every`` optimizer steps and at the last step."""

    def __init__(self, dirpath: str | Path, every: int):
        super().__init__(dirpath=str(dirpath), save_top_k=0, save_last=True, every_n_train_steps=every,
                         enable_version_counter=False)
        self.every = every
        self._uncommitted: int | None = None  # step of a written checkpoint that waits for its step to end
        self._stop_after_commit = False  # a signal asked to stop: exit once the written checkpoint is committed
        self._signals = StopOnSignal()

    @property
    def state_key(self) -> str:
        """One key whatever ``every`` is (ModelCheckpoint's names its trigger): a run resumed with another
        ``run.resume_every`` finds its state, where Lightning warned that the callback was missing."""
        return type(self).__qualname__

    @property
    def path(self) -> Path:
        return Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"

    @property
    def pending(self) -> Path:
        return self.path.with_name(f".{self.path.name}.pending")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if (batch_idx + 1) % trainer.accumulate_grad_batches or step == 0 or self._last_global_step_saved == step:
            return
        stop = self._signals.requested is not None
        if trainer.world_size > 1:  # every rank stops after the same step (a signal reaches ranks at different times)
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop or step % self.every == 0 or step >= trainer.max_steps:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._uncommitted = step
            self._stop_after_commit = stop

    def on_train_start(self, trainer, pl_module) -> None:
        self._signals.install()
        if trainer.is_global_zero:
            mark_running(Path(self.dirpath).parent)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._commit(trainer)
        if self._stop_after_commit:  # the step the signal interrupted is complete and checkpointed: stop here
            self._signals.restore()
            raise KeyboardInterrupt

    def on_train_end(self, trainer, pl_module) -> None:
        self._commit(trainer)
        self._signals.restore()
        if trainer.is_global_zero:
            clear_running(Path(self.dirpath).parent)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """Training is one epoch ending at max_steps, whose checkpoint ``on_train_batch_end`` takes."""

    def on_validation_end(self, trainer, pl_module) -> None:
        """No checkpoint at validation: the step's checkpoint is committed once its validation is logged."""

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        """Write to the hidden pending name; ``_commit`` renames it."""
        if trainer.is_global_zero and self.pending.is_dir():
            shutil.rmtree(self.pending)
        super()._save_checkpoint(trainer, str(self.pending))
        self._last_checkpoint_saved = filepath

    def _commit(self, trainer) -> None:
        """The step of the written checkpoint is complete: record where each log stands, then rename it into place."""
        step, self._uncommitted = self._uncommitted, None
        if step is None or not trainer.is_global_zero:
            return
        logs = {lg.name: lg.checkpoint_state() for lg in trainer.loggers if hasattr(lg, "checkpoint_state")}
        positions = load_positions(self.path.parent)
        positions[str(step)] = logs
        kept = sorted(positions, key=int)[-KEEP_POSITIONS:]
        write_json_atomic(self.path.parent / POSITIONS_FILE, {k: positions[k] for k in kept})
        _replace(self.pending, self.path)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """Ctrl-C or a scheduler's SIGTERM: say how to go on (from the checkpoint of the step reached)."""
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        self._signals.restore()
        if trainer.is_global_zero:
            clear_running(Path(self.dirpath).parent)
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        INTERRUPTED["signal"] = self._signals.requested or (signal.SIGTERM if isinstance(exception, SIGTERMException) else signal.SIGINT)
        INTERRUPTED["hint"] = resume_hint(Path(trainer.default_root_dir), trainer.global_step, checkpoint_step(self.path))
        if trainer.is_global_zero:
            print(f"\n[lmdynamics] {INTERRUPTED['hint']}", file=sys.stderr, flush=True)


class StopOnSignal:
    """While installed (during training, main thread only), SIGINT and SIGTERM record a stop request instead of
    raising; a second one restores the previous handlers and stops at once (Ctrl-C raises KeyboardInterrupt)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        if self._previous or threading.current_thread() is not threading.main_thread():
            return
        self.requested = None
        STOP["requested"] = None
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.requested is not None:  # asked twice: stop now
            self.restore()
            raise KeyboardInterrupt
        self.requested = signum
        STOP["requested"] = signum
        print(f"\n[lmdynamics] {signal.Signals(signum).name}: stopping after this step, once its resume checkpoint "
              "is written (signal again to stop at once)", file=sys.stderr, flush=True)


#: The signal that asked a training run to stop, while it finishes its step (None: none).
STOP: dict[str, int | None] = {"requested": None}


def load_positions(directory: Path) -> dict:
    """``{step: {logger name: position}}`` recorded beside the resume checkpoint (empty if none)."""
    try:
        return json.loads((Path(directory) / POSITIONS_FILE).read_text())
    except (OSError, ValueError):
        return {}


#: Set when a run was interrupted (Ctrl-C, SIGTERM); the CLI then exits with status 128 + the signal's number.
INTERRUPTED: dict[str, object] = {"hint": None, "signal": None}


def resume_command(run_dir: Path) -> str:
    """``cd <cwd> && <lmdynamics> fit --config <run>/config.yaml --ckpt_path last``: paths in the config (run.root,
    data, probe files) may be relative to the directory the run was started from."""
    from ..console import in_this_directory, lmdynamics_command

    config = Path(run_dir).absolute() / "config.yaml"
    return in_this_directory([*lmdynamics_command("fit"), "--config", str(config), "--ckpt_path", "last"])


def resume_hint(run_dir: Path, step: int, saved_step: int | None) -> str:
    start = f"step {saved_step}" if saved_step else "step 0 (no resume checkpoint yet)"
    return f"interrupted at step {step}; resume from {start} with: {resume_command(run_dir)}"


def _replace(tmp: Path, final: Path) -> None:
    """Rename a file or directory (DeepSpeed checkpoints are directories) over ``final``."""
    if tmp.is_dir() and final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.replace(final)


def read_checkpoint_state(path: str | Path) -> dict | None:
    """``{"step": global step, "logs": {logger: position} or None}`` of a Lightning checkpoint file (read
    memory-mapped, tensors untouched) and the log positions recorded for its step; None for a checkpoint
    directory (DeepSpeed)."""
    import torch

    path = Path(path)
    if path.is_dir():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated, not a checkpoint, another format: one line for people
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a readable Lightning checkpoint ({reason[:200]}); resume from the run's lightning/last.ckpt") from None
    step = int(ckpt.get("global_step", 0))
    return {"step": step, "logs": load_positions(path.parent).get(str(step))}


def checkpoint_step(path: Path) -> int | None:
    """The step of a checkpoint file, None if there is none or it cannot be read."""
    try:
        state = read_checkpoint_state(path) if path.exists() else None
    except ValueError:
        return None
    return state["step"] if state else None
