"""Hugging Face-format checkpoints on a Pythia-style schedule, written atomically, plus the run's run.json."""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from ..atomic import apply_umask, write_json_atomic
from ..distributed import full_state_dict
from ..layout import RunLayout, tokens_at
from ..checkpoints.steps import pythia_schedule


def run_description(trainer, pl_module) -> dict:
    """What was built and how it is trained: architecture, overrides of a named Pythia size, optimiser, schedule."""
    from ..models.zoo import count_parameters

    spec = pl_module.spec
    return {
        "pythia_size": spec.size,
        "overrides": {k: v for k, v in spec.overrides().items()},
        "architecture": asdict(spec.resolved()),
        "parameters": count_parameters(pl_module.model),
        "published_parameters": spec.published_parameters(),
        "optimizer": {**asdict(pl_module.optim), "lr": pl_module.resolved_optim().lr,
                      "overrides_of_published": pl_module.resolved_optim().overrides},
        "schedule": pl_module.schedule_description(),
        "speed": asdict(pl_module.speed),
        "precision": str(trainer.precision),
        "model_flops_per_token": pl_module.flops_per_token,
        "gradient_clip_val": trainer.gradient_clip_val,
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "world_size": trainer.world_size,
    }


class HFCheckpoints(L.Callback):
    """Save the model in Hugging Face format at steps 0, 1, 2, 4, ... (up to ``log_cap``), every ``every``
    steps, and at the last step, into ``<run>/checkpoints/stepNNNNNNNN`` (safetensors, config, tokenizer).

    Each directory is written under a temporary name and renamed into place, so a directory that exists is
    complete. ``GPTNeoXForCausalLM.from_pretrained(dir)`` loads it.
    """

    def __init__(self, every: int = 1000, log_cap: int | None = 512):
        if every <= 0:
            raise ValueError(f"checkpoints.every must be a positive number of steps, got {every}")
        self.every, self.log_cap = every, log_cap
        self.steps: set[int] = set()
        self.last_saved: Path | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self.steps = set(pythia_schedule(trainer.max_steps, self.every, self.log_cap))

    @staticmethod
    def directory(trainer) -> Path:
        return RunLayout(trainer.default_root_dir).checkpoints

    def on_train_start(self, trainer, pl_module) -> None:
        self._write_run_json(trainer, pl_module)
        existing = sorted(self.directory(trainer).glob("step[0-9]*"))
        self.last_saved = existing[-1] if existing else None
        if trainer.global_step == 0 and 0 in self.steps:
            self.save(trainer, pl_module, 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return
        step = trainer.global_step
        if step not in self.steps:
            return
        # every rank must decide alike (saving ends in a barrier): rank 0 may already have renamed the directory
        # into place when another rank looks, so rank 0's answer is the one taken
        done = RunLayout(trainer.default_root_dir).checkpoint_dir(step).exists()
        if not trainer.strategy.broadcast(done, src=0):
            self.save(trainer, pl_module, step)

    def save(self, trainer, pl_module, step: int) -> None:
        state = full_state_dict(trainer, pl_module)
        if trainer.global_rank == 0:
            self._write(trainer, pl_module, step, state)
        trainer.strategy.barrier("hf_checkpoint")
        self.last_saved = RunLayout(trainer.default_root_dir).checkpoint_dir(step)

    @staticmethod
    def _write(trainer, pl_module, step: int, state: dict) -> None:
        layout = RunLayout(trainer.default_root_dir)
        root = layout.checkpoints
        root.mkdir(parents=True, exist_ok=True)
        final = layout.checkpoint_dir(step)
        tmp = root / f".{final.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one bar per checkpoint would bury the training bar
        pl_module.model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
        dm = trainer.datamodule
        if dm is not None and dm.tokenizer is not None:
            dm.tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / "lmdynamics_step.json", {"step": step, "tokens": tokens_at(step, pl_module.tokens_per_step)})
        apply_umask(tmp)  # safetensors writes 0600
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)

    @rank_zero_only
    def _write_run_json(self, trainer, pl_module) -> None:
        layout = RunLayout(trainer.default_root_dir)
        layout.root.mkdir(parents=True, exist_ok=True)
        dm = trainer.datamodule
        info = {
            "run": layout.name,
            "model": pl_module.spec.name,
            "max_steps": trainer.max_steps,
            "tokens_per_step": pl_module.tokens_per_step,
            "seed": getattr(dm, "seed", None),
            "corpus": getattr(dm, "corpus_description", ""),
            "corpus_id": getattr(dm, "corpus_id", ""),
            "num_layers": pl_module.spec.num_layers,
            "hidden_size": pl_module.spec.hidden_size,
            "num_heads": pl_module.spec.num_heads,
            "vocab_size": pl_module.spec.vocab_size,
            "context_length": pl_module.spec.context_length,
            "checkpoint_steps": sorted(self.steps),
            **run_description(trainer, pl_module),
            **(dm.run_info() if hasattr(dm, "run_info") else {}),  # e.g. the synthetic language and its entropy floor
        }
        write_json_atomic(layout.run_json, info)
