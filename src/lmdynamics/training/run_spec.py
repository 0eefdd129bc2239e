"""The ``run`` section of a training config: where the run lives and how it is logged."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunSpec:
    """Where the run lives and how it is logged.

    Args:
        name: run name; the run directory is ``root/name``.
        root: parent directory of runs.
        loggers: any of ``tensorboard``, ``csv``, ``wandb`` (W&B needs ``pip install wandb``).
        wandb_project: W&B project when ``wandb`` is among the loggers.
        resume_every: steps between Lightning resume checkpoints (``lightning/last.ckpt``).
        report: draw the run's figures and ``report/report.md`` from its tidy table when fit ends.
        dry_run: build the model on the meta device, print the architecture, parameter count, optimiser,
            schedule and batch this config resolves to, and stop: nothing is trained or written.
    """

    name: str = "demo"
    root: str = "runs"
    loggers: list[str] = field(default_factory=lambda: ["tensorboard", "csv"])
    wandb_project: str = "lmdynamics"
    resume_every: int = 50
    report: bool = True
    dry_run: bool = False

    @property
    def dir(self) -> Path:
        return Path(self.root) / self.name
