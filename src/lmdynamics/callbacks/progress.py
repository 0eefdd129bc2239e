"""Progress for people: plain lines in a log file, and a terminal bar counted in optimizer steps.

A training run whose output goes to a file (``make train > log 2>&1``, a cluster job) shows nothing of
Lightning's live bar until the end: Rich draws it only on a terminal. ``ProgressLines`` prints a line there
instead, after the first step, then whenever ``every_seconds`` have passed or ``every_steps`` steps have been
done since the last line, and after the last step::

    [lmdynamics] step 120/600 (20%) | train_loss 5.1234 | val_loss 5.3012 (step 100) | 6,830 tokens/s | elapsed 0:00:37 | ETA 0:02:28

- ``train_loss``: the value the module logged for that step (mean loss over the step's global batch);
- ``val_loss``: the latest validation loss and the step it was measured at (absent before the first one);
- ``tokens/s``: tokens trained since the previous line over the wall time since then, validation and live
  measurements included (what the ETA is made of);
- ``ETA``: remaining steps x wall seconds per step so far in this process (a resumed run counts from its
  checkpoint).

``StepProgressBar`` is Lightning's Rich bar counted in optimizer steps (``step ━━━━ 120/600``): with
``max_epochs=-1`` (training by ``max_steps``) Lightning's own bar reads ``Epoch 0/-2`` and counts micro-batches.
"""

from __future__ import annotations

import math
import sys
import time

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

from ..clock import clock  # noqa: F401  (progress lines of long offline work use it without lightning)

PREFIX = "[lmdynamics]"
WHEN = ("auto", "always", "never")


class ProgressLines(L.Callback):
    """One line of training progress every ``every_seconds`` or ``every_steps`` steps, for logs.

    Args:
        when: ``auto`` (print lines when standard output is not a terminal, e.g. redirected to a file),
            ``always``, or ``never``.
        every_seconds: at most this long between two lines (0: no time trigger).
        every_steps: at most this many optimizer steps between two lines; null: a tenth of ``max_steps``.
    """

    def __init__(self, when: str = "auto", every_seconds: float = 30.0, every_steps: int | None = None):
        if when not in WHEN:
            raise ValueError(f"progress.when must be one of {', '.join(WHEN)}, got {when!r}")
        if every_seconds < 0:
            raise ValueError(f"progress.every_seconds must be >= 0 (0: no time trigger), got {every_seconds}")
        if every_steps is not None and every_steps < 1:
            raise ValueError(f"progress.every_steps must be a positive number of steps or null, got {every_steps}")
        self.when, self.every_seconds, self.every_steps = when, every_seconds, every_steps
        self.active = False
        self._val: tuple[int, float] | None = None  # (step, val_loss) of the latest validation

    def on_train_start(self, trainer, pl_module) -> None:
        self.active = trainer.is_global_zero and (self.when == "always" or (self.when == "auto" and not _is_terminal()))
        now = time.monotonic()
        self._start_step = self._last_step = trainer.global_step
        self._start_time = self._last_time = now
        self._val = None

    # A step's train_loss is logged by the module's on_train_batch_end, which Lightning runs after every
    # callback's: the line for step k is written at the next hook that sees k done (the next batch's start,
    # the end of a validation after k, or the end of training).
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._maybe_print(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        val = trainer.callback_metrics.get("val_loss")
        if val is not None:
            self._val = (trainer.global_step, float(val))
        self._maybe_print(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._maybe_print(trainer, pl_module, force=True)

    def _interval(self, trainer) -> int:
        if self.every_steps is not None:
            return self.every_steps
        return max(1, trainer.max_steps // 10) if trainer.max_steps and trainer.max_steps > 0 else 1

    def _maybe_print(self, trainer, pl_module, force: bool = False) -> None:
        if not self.active:
            return
        step = trainer.global_step
        if step == self._last_step:
            return
        now = time.monotonic()
        due = (force or step - self._start_step == 1 or step == trainer.max_steps
               or step - self._last_step >= self._interval(trainer)
               or (self.every_seconds > 0 and now - self._last_time >= self.every_seconds))
        if not due:
            return
        print(self.line(trainer, pl_module, step, now), flush=True)
        self._last_step, self._last_time = step, now

    def line(self, trainer, pl_module, step: int, now: float) -> str:
        max_steps = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        parts = [f"step {step}/{max_steps} ({100 * step / max_steps:.0f}%)" if max_steps else f"step {step}"]
        loss = trainer.callback_metrics.get("train_loss")
        if loss is not None:
            parts.append(f"train_loss {float(loss):.4f}")
        if self._val is not None:
            parts.append(f"val_loss {self._val[1]:.4f} (step {self._val[0]})")
        per_step = getattr(pl_module, "tokens_per_step", None)
        window = now - self._last_time
        if per_step and window > 0:
            parts.append(f"{(step - self._last_step) * per_step / window:,.0f} tokens/s")
        elapsed = now - self._start_time
        done = step - self._start_step
        eta = (max_steps - step) * elapsed / done if max_steps and done > 0 else math.nan
        parts += [f"elapsed {clock(elapsed)}", f"ETA {clock(eta)}"]
        return f"{PREFIX} " + " | ".join(parts)


def _is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


class StepProgressBar(RichProgressBar):
    """Lightning's Rich bar counted in optimizer steps, ``step ━━━━ 120/600``: Lightning's own bar reads
    ``Epoch 0/-2`` when training by ``max_steps`` (``max_epochs=-1``) and counts micro-batches."""

    @property
    def total_train_batches(self) -> int | float:
        max_steps = self.trainer.max_steps
        return max_steps if max_steps and max_steps > 0 else super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        return f"{'step':{len(self.validation_description)}}"  # padded as Lightning pads "Epoch N"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.is_disabled:
            return
        if self.train_progress_bar_id is None:  # resuming mid-epoch
            self._initialize_train_progress_bar_id()
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()


def with_step_bar(callbacks: list, enable_progress_bar: bool | None) -> list:
    """``callbacks`` plus a ``StepProgressBar`` when the Trainer will show a bar and none was configured."""
    if enable_progress_bar is False or any(isinstance(c, ProgressBar) for c in callbacks):
        return list(callbacks)
    return [*callbacks, StepProgressBar()]
