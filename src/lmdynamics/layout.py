"""Where things live: one training run's directory, step <-> file names, tokens at a step, file-safe names.

Training, the callbacks, the offline analysis and the reports all find a run's files through
:class:`RunLayout`, so a path is spelt in one place::

    runs/<name>/
      run.json                   what was trained (model, tokens per step, corpus, schedule)  RunLayout.run_json
      config.yaml                the resolved training config                                   .config
      metrics.parquet/           the tidy table (lmdynamics.store)                              .table
      probe.safetensors          the probe sequences of the live measurements                  .probe
      activations/stepNNNNNNNN.safetensors   probe activations per measured step               .activation_file(step)
      checkpoints/stepNNNNNNNN/  Hugging Face checkpoints                                      .checkpoint_dir(step)
      lightning/                 Lightning's resume checkpoint and logger positions             .lightning
      evaluations/<kind>-stepNNNNNNNN/   `validate` runs, apart from the run's own logs         .evaluation_dir(kind, step)
      events.jsonl               saturation events of the head monitor                          .events
      report/                    report.md and figures/                                         .report
      sweep.log                  the run's output when a sweep ran it (lmdynamics sweep)        .sweep_log
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

SWEEP_LOG = "sweep.log"
_STEP_NAME = re.compile(r"^step(\d+)$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")


def step_name(step: int) -> str:
    """``step00001000``: zero-padded so that sorting by name sorts by step."""
    return f"step{int(step):08d}"


def parse_step_name(name: str) -> int | None:
    """The step of a name written by :func:`step_name` (a file's stem or a directory's name), else None."""
    m = _STEP_NAME.match(name)
    return int(m.group(1)) if m else None


def slug(name: str) -> str:
    """A file-name-safe form of a run or model name (``EleutherAI/pythia-70m`` -> ``EleutherAI--pythia-70m``)."""
    return _UNSAFE.sub("_", str(name).replace("/", "--")) or "model"


def tokens_at(step: int, tokens_per_step: int) -> int:
    """Tokens seen after ``step`` optimizer steps."""
    return int(step) * int(tokens_per_step)


@dataclass(frozen=True)
class RunLayout:
    """The paths of one training run directory (see the module docstring)."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    @property
    def name(self) -> str:
        return self.root.name

    run_json = property(lambda self: self.root / "run.json")
    config = property(lambda self: self.root / "config.yaml")
    probe = property(lambda self: self.root / "probe.safetensors")
    events = property(lambda self: self.root / "events.jsonl")
    activations = property(lambda self: self.root / "activations")
    checkpoints = property(lambda self: self.root / "checkpoints")
    lightning = property(lambda self: self.root / "lightning")
    evaluations = property(lambda self: self.root / "evaluations")
    report = property(lambda self: self.root / "report")
    trajectories = property(lambda self: self.root / "trajectories")
    sweep_log = property(lambda self: self.root / SWEEP_LOG)

    def started(self) -> bool:
        """Whether training wrote anything here (the log a sweep opens before the run starts does not count)."""
        return self.root.is_dir() and any(p.name != SWEEP_LOG for p in self.root.iterdir())

    @property
    def table(self) -> Path:
        from .store import table_path

        return table_path(self.root)

    def activation_file(self, step: int) -> Path:
        return self.activations / f"{step_name(step)}.safetensors"

    def activation_steps(self) -> list[tuple[int, Path]]:
        """``(step, file)`` of every stored probe activation file, by step."""
        found = [(parse_step_name(p.stem), p) for p in self.activations.glob("step*.safetensors")]
        return sorted((s, p) for s, p in found if s is not None)

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints / step_name(step)

    def checkpoint_dirs(self) -> dict[int, Path]:
        """Complete Hugging Face checkpoints (a directory with config.json) by step."""
        found = {}
        if self.checkpoints.is_dir():
            for child in self.checkpoints.iterdir():
                step = parse_step_name(child.name)
                if step is not None and child.is_dir() and (child / "config.json").is_file():
                    found[step] = child
        return dict(sorted(found.items()))

    def evaluation_dir(self, kind: str, step: int) -> Path:
        return self.evaluations / f"{kind}-{step_name(step)}"

    def info(self) -> dict:
        """The run's ``run.json``; FileNotFoundError (one line) if this is not a run directory."""
        if not self.run_json.is_file():
            raise FileNotFoundError(f"{self.root} is not a training run directory (no run.json)")
        return json.loads(self.run_json.read_text())

    def tokens_at(self, step: int) -> int:
        return tokens_at(step, self.info()["tokens_per_step"])
