"""Test-only callbacks, loaded by the real CLI through ``--trainer.callbacks+=tests.helpers.callbacks.X``."""

import json
import os
from pathlib import Path

import lightning as L

from lmdynamics.callbacks.base import Probe


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
    trainer = SimpleNamespace(callbacks=[FixedProbe(acts_at), callback], is_global_zero=True, global_step=start,
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
