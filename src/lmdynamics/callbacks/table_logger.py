"""A Lightning logger that writes every logged scalar (losses, lr, grad norm, throughput) to the tidy table.

Rows: layer -1, component ``model``, metric = the logged name (``train_loss``, ``val_loss``, ``lr``, ...).
Rows are buffered and appended as one atomic part every ``flush_every`` steps, at each validation, when a
resume checkpoint is committed (``checkpoint_state``, before ``last.ckpt`` is renamed into place) and at the
end, so the table is readable while training runs (at most ``flush_every`` steps behind) and a resumed run
finds every row up to its checkpoint. A resumed run first drops what the killed run wrote after the checkpoint
(``rewind``); the end of a run compacts the table, so any Parquet reader sees one row per key.

``step`` fixes the step of every row (``validate`` of a checkpoint: its rows carry the checkpoint's step).
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

from .. import store
from ..layout import tokens_at


class TidyTableLogger(Logger):
    def __init__(self, run_dir: str | Path, module, flush_every: int = 50, step: int | None = None,
                 run_name: str | None = None):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.run_name = run_name or self.run_dir.name
        self.fixed_step = step
        self.module = module  # the LMModule: model name and tokens per step are read when rows are made
        self.flush_every = flush_every
        self._rows: list[dict] = []
        self._last_flush = 0

    @property
    def name(self) -> str:
        return "tidy"

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self.run_dir)

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        # ``step`` is the number of optimizer steps done (the module logs every value itself, at that step);
        # an evaluation of a checkpoint writes every row at the checkpoint's step.
        step = self.fixed_step if self.fixed_step is not None else int(step or 0)
        tokens = tokens_at(step, self.module.tokens_per_step)
        for name, value in metrics.items():
            if name == "epoch":
                continue
            self._rows.append({"run": self.run_name, "model": self.module.spec.name, "step": step, "tokens": tokens,
                               "layer": -1, "component": "model", "metric": name, "value": float(value)})
        if any(n.startswith("val_") for n in metrics):
            self._flush()

    @rank_zero_only
    def save(self) -> None:
        """Lightning calls this after every ``log_metrics``; a Parquet part per step would cost ~1% of a small
        run's time, so rows are written every ``flush_every`` steps (and at validation, checkpoints and the end)."""
        if self._rows and self._rows[-1]["step"] - self._last_flush >= self.flush_every:
            self._flush()

    def checkpoint_state(self) -> dict:
        """A resume checkpoint is about to be committed: a run resumed from it redoes only later steps, so the
        rows up to here must be on disk first."""
        self._flush()
        trainer = getattr(self.module, "_trainer", None)
        return {"step": int(trainer.global_step) if trainer is not None else 0}

    def rewind(self, state: dict) -> None:
        """Drop this run's rows after the checkpoint's step and its end-of-run values (recomputed at the end)."""
        from ..cka_to_final import END_OF_RUN_METRICS

        store.rewind(store.table_path(self.run_dir), self.run_name, int(state.get("step", -1)), END_OF_RUN_METRICS)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self._flush()
        store.compact(store.table_path(self.run_dir))

    def _flush(self) -> None:
        if self._rows:
            store.append(store.table_path(self.run_dir), self._rows)
            self._last_flush = self._rows[-1]["step"]
            self._rows = []
