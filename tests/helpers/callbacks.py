"""Test-only callbacks, loaded by the real CLI through ``--trainer.callbacks+=tests.helpers.callbacks.X``."""

import json
import os

import lightning as L


class LossRecorder(L.Callback):
    """Appends (step, loss) after every optimizer step to a JSON-lines file, flushed at once."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"step": trainer.global_step, "loss": float(loss)}) + "\n")


class KillAtStep(L.Callback):
    """Ends the process abruptly (like a kill) when step ``step`` is about to start."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            os._exit(137)
