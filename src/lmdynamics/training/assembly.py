"""What a training run is made of besides model and data: its loggers (the tidy table always, TensorBoard,
CSV, W&B), the resume checkpoint, the step bar, and the measuring callbacks wired to the run's probe and
checkpoint schedule (explicit wiring: no callback looks another up)."""

from __future__ import annotations

from pathlib import Path

from ..callbacks.base import MeasurementCallback
from ..callbacks.progress import with_step_bar
from ..callbacks.table_logger import TidyTableLogger
from .loggers import RunCSVLogger, RunTensorBoardLogger
from .resume import ResumeCheckpoint
from .run_directory import Invocation, launching_rank_zero


def build_loggers(invocation: Invocation, model) -> list:
    """The loggers of this invocation, writing to its output directory; a resumed fit first cuts each back to
    the resume checkpoint's position (rank 0)."""
    run, out = invocation.run, invocation.output_dir()
    step = None if invocation.eval_dir is None else invocation.eval_step
    loggers = [TidyTableLogger(out, model, step=step, run_name=run.name)]  # the tidy table is always written
    if "tensorboard" in run.loggers:
        loggers.append(RunTensorBoardLogger(out, step=step))
    if "csv" in run.loggers:
        loggers.append(RunCSVLogger(out, step=step))
    resume = invocation.resume
    if resume and resume.get("logs") is not None and launching_rank_zero():
        for logger in loggers:
            logger.rewind(resume["logs"].get(logger.name, {}))
    if "wandb" in run.loggers:
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(WandbLogger(project=run.wandb_project, name=run.name, save_dir=str(out)))
    return loggers


def trainer_settings(trainer_cfg: dict, invocation: Invocation, loggers: list, **kwargs) -> dict:
    """The Trainer's arguments: the config's, with the step bar, the resume checkpoint, the output directory and
    the loggers (``kwargs`` last)."""
    run = invocation.run
    callbacks = with_step_bar(trainer_cfg.get("callbacks") or [], trainer_cfg.get("enable_progress_bar"))
    return {**trainer_cfg, "callbacks": [*callbacks, ResumeCheckpoint(Path(run.dir) / "lightning", run.resume_every)],
            "default_root_dir": str(invocation.output_dir()), "logger": loggers, **kwargs}


def wire_measurements(callbacks, probe, checkpoints) -> None:
    """Hand every measuring callback the run's probe and checkpoint schedule."""
    for callback in callbacks:
        if isinstance(callback, MeasurementCallback):
            callback.attach(probe, (checkpoints.every, checkpoints.log_cap))
