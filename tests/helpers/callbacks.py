"""Test-only callbacks, loaded by the real CLI through ``--trainer.callbacks+=tests.helpers.callbacks.X``."""

import json
import os
import time
from pathlib import Path

import lightning as L

from lmdynamics.callbacks.probe import Probe


class LossRecorder(L.Callback):
    """Appends (step, loss) after every optimizer step to a JSON-lines file, flushed at once."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"step": trainer.global_step, "loss": float(loss)}) + "\n")


class BatchRecorder(L.Callback):
    """One JSON line per micro-batch (the step it belongs to, its index, epoch, token ids and loss) and per
    validation (step, val_loss), appended and flushed at once, so a killed process leaves what it did."""

    def __init__(self, path: str):
        import faulthandler
        import signal

        self.path = path
        self._step = None
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # a test that finds the run hung asks for stacks

    def _write(self, row: dict) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self._write({"kind": "batch", "step": self._step, "micro": batch_idx % trainer.accumulate_grad_batches,
                     "batch_idx": batch_idx, "epoch": trainer.current_epoch, "rank": trainer.global_rank,
                     "ids": batch.flatten().tolist(), "loss": float(loss).hex()})

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._write({"kind": "val", "step": trainer.global_step, "rank": trainer.global_rank,
                     "val_loss": float(trainer.callback_metrics["val_loss"]).hex()})


class PauseAt(L.Callback):
    """Stops the run at a chosen point so that a test can signal it from outside: when ``trainer.global_step``
    equals ``step`` at ``where``, rank 0 writes ``marker`` and every rank sleeps until the signal arrives.

    ``where``: ``batch_start`` (before the step's first micro-batch), ``mid_accumulation`` (before its last
    micro-batch, gradients half accumulated; needs accumulation), ``batch_end`` (after the optimizer step,
    before the resume checkpoint of that step) or ``validation`` (inside the validation run at that step).
    """

    WHERE = ("batch_start", "mid_accumulation", "batch_end", "validation")

    def __init__(self, step: int, where: str, marker: str):
        if where not in self.WHERE:
            raise ValueError(f"PauseAt.where must be one of {self.WHERE}, got {where!r}")
        self.step, self.where, self.marker = step, where, marker

    def _pause(self, trainer) -> None:
        if trainer.global_rank == 0:
            Path(self.marker).write_text(str(os.getpid()))
        from lmdynamics.training.resume import STOP

        while STOP["requested"] is None:  # SIGKILL ends it here; SIGINT/SIGTERM ask the run to stop after this step
            time.sleep(0.05)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        micro, acc = batch_idx % trainer.accumulate_grad_batches, trainer.accumulate_grad_batches
        if trainer.global_step != self.step:
            return
        if (self.where == "batch_start" and micro == 0) or (self.where == "mid_accumulation" and acc > 1 and micro == acc - 1):
            self._pause(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        last = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        if self.where == "batch_end" and last and trainer.global_step == self.step:
            self._pause(trainer)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.where == "validation" and trainer.state.fn == "fit" and trainer.global_step == self.step:
            self._pause(trainer)


class PauseAtRun(PauseAt):
    """``PauseAt`` in one run of a sweep only: the run whose directory is named ``run`` pauses, the others train on
    (a sweep's runs share their configs)."""

    def __init__(self, run: str, step: int, where: str, marker: str):
        super().__init__(step, where, marker)
        self.run = run

    def _pause(self, trainer) -> None:
        if Path(trainer.default_root_dir).name == self.run:
            super()._pause(trainer)


class FixedProbe(Probe):
    """A probe whose activations at each step are given by ``acts_at(step)``: value tests of the callbacks."""

    def __init__(self, acts_at):
        super().__init__()
        self.acts_at = acts_at

    def activations(self, trainer, pl_module, step):
        return self.acts_at(step)


def drive(callback, run: Path, acts_at, model=None, start: int = 0, stop: int = 4, tokens_per_step: int = 10,
          model_name: str = "m"):
    """Call ``callback``'s hooks as Lightning does for steps start..stop of a run with max_steps ``stop`` on one
    device, measuring every step; return the run's tidy table."""
    from types import SimpleNamespace

    from lmdynamics import store

    run.mkdir(exist_ok=True)
    (run / "run.json").write_text(json.dumps({"run": run.name, "model": model_name, "tokens_per_step": tokens_per_step}))
    probe = FixedProbe(acts_at)
    callback.attach(probe)
    trainer = SimpleNamespace(callbacks=[probe, callback], is_global_zero=True, global_step=start,
                              accumulate_grad_batches=1, max_steps=stop, default_root_dir=str(run), loggers=[],
                              world_size=1, global_rank=0, sanity_checking=False, callback_metrics={})
    module = SimpleNamespace(spec=SimpleNamespace(name=model_name), tokens_per_step=tokens_per_step, model=model)
    callback.setup(trainer, module, "fit")
    callback.on_train_start(trainer, module)
    for step in range(start + 1, stop + 1):
        trainer.global_step = step
        callback.on_train_batch_end(trainer, module, None, None, step - 1)
    callback.on_fit_end(trainer, module)
    return store.read_table(store.table_path(run))
