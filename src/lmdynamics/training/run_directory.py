"""The run directory's lifecycle, for ``fit`` and ``validate``: what an invocation may write where.

A fresh ``fit`` needs an empty run directory; ``fit --ckpt_path last`` resumes from ``lightning/last.ckpt``
(a run killed before its first checkpoint starts again; a finished run only redoes its end-of-run work).
``validate`` never touches the run's logs or table: it builds ``<run>/evaluations/validate-stepNNNNNNNN`` under
a temporary name and moves it into place when it succeeded (a failure leaves nothing). Only the process of
global rank 0 checks, creates and removes directories.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_text_atomic
from ..layout import RunLayout
from .resume import read_checkpoint_state
from .run_status import finished_step, mark_finished
from .run_spec import RunSpec


class RunDirectoryExists(RuntimeError):
    pass


class RunFinished(Exception):
    """``fit --ckpt_path last`` of a run that has done all its steps: nothing to train (not an error)."""


@dataclass
class Invocation:
    """Where one ``fit`` or ``validate`` writes. ``resume``: the checkpoint's step and log positions when fit
    resumes; ``eval_dir``/``eval_step``: the evaluation directory and the checkpoint's step of ``validate``."""

    run: RunSpec
    subcommand: str
    resume: dict | None = None
    eval_dir: Path | None = None
    eval_step: int = 0

    def output_dir(self) -> Path:
        """The run directory (fit) or the temporary evaluation directory (validate)."""
        if self.eval_dir is None:
            return self.run.dir
        return self.eval_dir.with_name(f".{self.eval_dir.name}.tmp")

    def prepare_output(self) -> Path:
        """Create the output directory (a killed evaluation's leftover removed first)."""
        out = self.output_dir()
        if self.eval_dir is not None and out.exists() and launching_rank_zero():
            shutil.rmtree(out)  # left by a killed evaluation
        out.mkdir(parents=True, exist_ok=True)
        return out

    def discard_partial(self) -> None:
        """A failed evaluation leaves no partial output."""
        tmp = self.output_dir()
        if self.eval_dir is not None and tmp.exists() and launching_rank_zero():
            shutil.rmtree(tmp, ignore_errors=True)

    def publish_evaluation(self) -> Path:
        """Move the finished evaluation into place (replacing an earlier one of the same step)."""
        final, tmp = self.eval_dir, self.output_dir()
        old = final.with_name(f".{final.name}.old")
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        return final

    def config_name(self) -> str:
        return "config.yaml" if self.subcommand == "fit" else f"config-{self.subcommand}.yaml"

    def write_config(self, text: str) -> None:
        """The resolved config of this invocation, atomically, as ``config.yaml`` (``config-<sub>.yaml`` for others)."""
        if launching_rank_zero():
            write_text_atomic(self.output_dir() / self.config_name(), text)


def plan_invocation(cfg, run: RunSpec, subcommand: str, finish_completed_run) -> Invocation:
    """Where this invocation writes, checked against what the run directory holds; ``cfg.ckpt_path`` resolved.
    ``finish_completed_run(cfg, run)`` redoes the end-of-run work of a finished run killed during it."""
    invocation = Invocation(run, subcommand)
    if run.dry_run:
        return invocation  # nothing is read from or written to the run directory
    if subcommand == "fit":
        _check_fit_start(cfg, invocation, finish_completed_run)
    else:
        _plan_evaluation(cfg, invocation)
    return invocation


def _check_fit_start(cfg, invocation: Invocation, finish_completed_run) -> None:
    """A fresh run needs an empty directory; ``--ckpt_path last`` resumes from ``lightning/last.ckpt``."""
    run = invocation.run
    ckpt = cfg.get("ckpt_path")
    last = run.dir / "lightning" / "last.ckpt"
    started = RunLayout(run.dir).started()  # a sweep's log alone is no start
    if not ckpt:
        if started and launching_rank_zero():
            raise RunDirectoryExists(f"run directory {run.dir} already exists; resume it with --ckpt_path last, or pick another --run.name")
        return
    if ckpt == "last" and not last.exists():
        if not started:
            raise FileNotFoundError(f"--ckpt_path last: no resume checkpoint at {last}; start the run without --ckpt_path")
        # killed before its first checkpoint: start again, in place of what the killed process logged
        print(f"[lmdynamics] {run.dir} has no resume checkpoint yet: training it again from step 0", file=sys.stderr)
        cfg.ckpt_path = None
        invocation.resume = {"step": 0, "logs": {"tidy": {"step": -1}, "csv": {"rows": 0}, "tensorboard": {"sizes": {}}}}
        return
    path = last if ckpt == "last" else Path(ckpt)
    if not path.exists():
        raise FileNotFoundError(f"--ckpt_path {ckpt} does not exist")
    cfg.ckpt_path = str(path)
    invocation.resume = read_checkpoint_state(path)
    if invocation.resume and invocation.resume["step"] >= cfg.trainer.max_steps:
        if launching_rank_zero() and finished_step(run.dir) != invocation.resume["step"]:
            finish_completed_run(cfg, run)  # killed during its end-of-run work: complete it
            mark_finished(run.dir, invocation.resume["step"])
        raise RunFinished(f"{run.dir} already finished its {cfg.trainer.max_steps} steps; its end-of-run results "
                          "are up to date (nothing to do)")


def _plan_evaluation(cfg, invocation: Invocation) -> None:
    """``validate`` writes to ``<run>/evaluations/<sub>-stepN`` (built under a temporary name), never to the
    run's own logs; its rows carry the step of the checkpoint evaluated."""
    run = invocation.run
    ckpt = cfg.get("ckpt_path")
    if ckpt == "last":
        ckpt = str(run.dir / "lightning" / "last.ckpt")
    if ckpt and not Path(ckpt).exists():
        raise FileNotFoundError(f"--ckpt_path {ckpt} does not exist")
    state = read_checkpoint_state(ckpt) if ckpt else None
    if ckpt:
        cfg.ckpt_path = ckpt
    invocation.eval_step = state["step"] if state else 0
    invocation.eval_dir = run.dir / "evaluations" / f"{invocation.subcommand}-step{invocation.eval_step:08d}"


def launching_rank_zero() -> bool:
    """True in the process of global rank 0 (or before any launcher has started others).

    Processes started by a launcher (Lightning's DDP re-execution, torchrun, SLURM) carry their rank in the
    environment; only rank 0 checks and creates the run directory.
    """
    for var in ("RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var]) == 0
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0
