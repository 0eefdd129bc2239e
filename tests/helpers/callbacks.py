"""Test-only callbacks, loaded by the real CLI through ``--trainer.callbacks+=tests.helpers.callbacks.X``."""

import json
import os
import time
from pathlib import Path

import lightning as L


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
        while True:
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

