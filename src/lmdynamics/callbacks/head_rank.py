"""HeadRank: the output head's singular spectrum, last-layer anisotropy, and a saturation monitor.

Godey et al. (2024): in small models the head's spectrum collapses and the last layer's representations
turn anisotropic as the loss saturates. Recorded: the catalogue's spectrum measurements of the head (ER, PER,
..., KL-to-uniform of s / sum(s); ``lmdynamics metrics``) at every measurement; its full normalised spectrum s / s_max at checkpoint
steps (``sv_norm`` rows of the head, the singular value's position in ``index``); anisotropy of the last layer's residual
stream and of the final hidden state on the probe. The monitor writes an event (a ``saturation_event``
row, a line in ``<run>/events.jsonl`` and a warning) when validation loss has stayed above its running minimum
by more than its noise for ``patience`` validations while KL-to-uniform has jumped ``kl_jump`` (relative) above
its value at the loss minimum (``SaturationRule``). A resumed run replays the rule over its table.
"""

from __future__ import annotations

import json
import math

from lightning.pytorch.utilities import rank_zero_warn

from ..catalogue import head_series
from ..measure import anisotropy_rows, head_metric_rows
from ..distributed import gathered_weight
from ..layout import RunLayout
from ..models.heads import head_matrices
from .base import MeasurementCallback


class SaturationRule:
    """The saturation monitor's rule, fed one validation at a time (``update``); pure, so that the live
    callback and an offline replay over a run's table (``replay``) apply exactly the same rule.

    A validation at step t counts as *rising* when its loss exceeds the running minimum by more than
    ``max(loss_margin, noise_factor * sigma)``, sigma being the validation loss's step-to-step noise
    (1.4826 x median |difference of successive validations| / sqrt(2), over the last ``window`` differences
    before t; a robust standard deviation). An event fires at the ``patience``-th rising validation in a row
    if the head's latest KL-to-uniform exceeds ``(1 + kl_jump)`` x the KL measured at or before the step of
    the loss minimum (``kl_reference: best``) or x the running minimum of all earlier KL values
    (``kl_reference: min``, the first rule's). One event per excursion: it re-arms when a validation is no
    longer rising. ``patience=1, noise_factor=0, kl_reference='min'`` is the first rule.
    """

    def __init__(self, loss_margin: float = 0.02, kl_jump: float = 0.05, patience: int = 3,
                 noise_factor: float = 5.0, window: int = 8, kl_reference: str = "best"):
        if loss_margin < 0 or kl_jump < 0 or noise_factor < 0:
            raise ValueError("head_rank.loss_margin, head_rank.kl_jump and head_rank.noise_factor must be >= 0")
        if patience < 1 or window < 2:
            raise ValueError(f"head_rank.patience must be >= 1 and head_rank.noise_window >= 2, got {patience} and {window}")
        if kl_reference not in ("best", "min"):
            raise ValueError(f"head_rank.kl_reference must be 'best' or 'min', got {kl_reference!r}")
        self.loss_margin, self.kl_jump, self.patience = loss_margin, kl_jump, patience
        self.noise_factor, self.window, self.kl_reference = noise_factor, window, kl_reference
        self.vals: list[float] = []
        self.kls: list[tuple[int, float]] = []  # (step, KL-to-uniform) of every head measurement so far
        self.best_val, self.best_step = math.inf, -1
        self.run_length = 0
        self.armed = True

    def add_kl(self, step: int, kl: float) -> None:
        self.kls.append((step, kl))

    def noise(self) -> float:
        """Robust standard deviation of one validation's loss from the last ``window`` successive differences."""
        recent = self.vals[-self.window - 1 :]  # the last window + 1 values (all of them early in a run)
        diffs = [abs(b - a) for a, b in zip(recent, recent[1:])]
        if not diffs:
            return 0.0
        diffs.sort()
        mid = len(diffs) // 2
        median = diffs[mid] if len(diffs) % 2 else 0.5 * (diffs[mid - 1] + diffs[mid])
        return 1.4826 * median / math.sqrt(2)

    def kl_reference_value(self) -> float | None:
        """What the latest KL is compared with: the running minimum of the earlier KLs (``min``), or the KL at
        the loss minimum (``best``): the last measured at or before its step, which is the latest KL itself when
        the head has not been measured since (no jump then); the first KL when all came after it."""
        if len(self.kls) < 2:
            return None
        if self.kl_reference == "min":
            return min(k for _, k in self.kls[:-1])
        at_best = [k for s, k in self.kls if s <= self.best_step]
        return at_best[-1] if at_best else self.kls[0][1]

    def update(self, step: int, val: float) -> dict | None:
        """Feed the validation loss at ``step`` (after any KL measured at that step); the event, or None."""
        margin = max(self.loss_margin, self.noise_factor * self.noise())
        rising = val > self.best_val + margin
        self.vals.append(val)
        if val < self.best_val:
            self.best_val, self.best_step = val, step
        self.run_length = self.run_length + 1 if rising else 0
        if not rising:
            self.armed = True
            return None
        ref = self.kl_reference_value()
        if not (self.armed and self.run_length >= self.patience and ref is not None
                and self.kls[-1][1] > ref * (1.0 + self.kl_jump)):
            return None
        self.armed = False
        return {"event": "saturation", "step": step, "val_loss": val, "best_val_loss": self.best_val,
                "best_step": self.best_step, "margin": margin, "kl_uniform": self.kls[-1][1], "kl_uniform_reference": ref}

    @classmethod
    def replay(cls, val_loss: dict[int, float], kl_uniform: dict[int, float], **rule) -> list[dict]:
        """The events the rule gives on a finished run: ``val_loss`` and ``kl_uniform`` map step -> value (as
        in the run's tidy table); a KL measured at step t is seen before the validation at t, as live."""
        return cls.replayed(val_loss, kl_uniform, **rule)[1]

    @classmethod
    def replayed(cls, val_loss: dict[int, float], kl_uniform: dict[int, float], **rule) -> tuple[SaturationRule, list[dict]]:
        """The rule after ``replay`` (its running state, ready for the next validation) and its events."""
        r = cls(**rule)
        kl_steps = sorted(kl_uniform)
        events, i = [], 0
        for step in sorted(val_loss):
            while i < len(kl_steps) and kl_steps[i] <= step:
                r.add_kl(kl_steps[i], kl_uniform[kl_steps[i]])
                i += 1
            event = r.update(step, val_loss[step])
            if event is not None:
                events.append(event)
        while i < len(kl_steps):  # measured after the last validation
            r.add_kl(kl_steps[i], kl_uniform[kl_steps[i]])
            i += 1
        return r, events


class HeadRank(MeasurementCallback):
    """Head spectrum, anisotropy and saturation events.

    Args:
        spectrum: the head's whole normalised spectrum (``sv_norm`` rows) at the HF checkpoint steps
            (``checkpoints``), at every measurement (``all``) or never (``none``); the offline analysis's
            ``spectrum``.
        loss_margin: least rise (nats) of validation loss above its running minimum that counts.
        kl_jump: relative rise of KL-to-uniform above its reference (``kl_reference``) that counts as a jump.
        patience: validations in a row the loss must stay risen before an event.
        noise_factor: the rise must also exceed this many robust standard deviations of the validation loss's
            step-to-step noise (over the last ``noise_window`` differences).
        kl_reference: ``best`` (KL when the loss was at its minimum) or ``min`` (KL's running minimum).
        every, log_cap, enabled: see ``MeasurementCallback``. The rule: ``SaturationRule``.
    """

    def __init__(self, every: int | None = None, log_cap: int | None = None, enabled: bool = True,
                 spectrum: str = "checkpoints", loss_margin: float = 0.02, kl_jump: float = 0.05,
                 patience: int = 3, noise_factor: float = 5.0, noise_window: int = 8, kl_reference: str = "best"):
        super().__init__(every, log_cap, enabled)
        if spectrum not in ("checkpoints", "all", "none"):
            raise ValueError(f"head_rank.spectrum must be 'checkpoints', 'all' or 'none', got {spectrum!r}")
        self.spectrum = spectrum
        self.settings = {"loss_margin": loss_margin, "kl_jump": kl_jump, "patience": patience,
                         "noise_factor": noise_factor, "window": noise_window, "kl_reference": kl_reference}
        self.rule = SaturationRule(**self.settings)
        self.events: list[dict] = []

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        if self.enabled and trainer.global_step > 0 and trainer.is_global_zero:
            self.resume(RunLayout(trainer.default_root_dir), trainer.global_step)

    def resume(self, layout: RunLayout, step: int) -> None:
        """A run resumed from its checkpoint at ``step``: the monitor's state (running minimum, noise window,
        validations risen in a row, events) replayed from the run's table, which the training CLI has cut back
        to that checkpoint, and ``events.jsonl`` cut back to those events (a killed process may have written
        later ones, which the resumed run writes again)."""
        from .. import store
        from ..atomic import write_text_atomic

        table = store.read_table(layout.table, metrics=["val_loss", "kl_uniform"]) if layout.table.is_dir() else None
        if table is None or table.empty:
            return
        table = table[table["step"] <= step]
        val = table[(table["metric"] == "val_loss") & (table["component"] == "model")]
        kl = head_series(table, "kl_uniform")
        series = [{int(s): float(v) for s, v in zip(f["step"], f["value"])} for f in (val, kl)]
        self.rule, self.events = SaturationRule.replayed(*series, **self.settings)
        if self.events:
            write_text_atomic(layout.events, "".join(json.dumps(e) + "\n" for e in self.events))
        else:  # written only once the monitor fires
            layout.events.unlink(missing_ok=True)

    def _spectrum_step(self, trainer, step: int) -> bool:
        if self.spectrum != "checkpoints":
            return self.spectrum == "all"
        return self.checkpoint_steps is None or step in self.checkpoint_steps

    def measure(self, trainer, pl_module, step: int):
        model = pl_module.model
        heads = head_matrices(model, lambda name: gathered_weight(model, name))  # plain, low-rank A B, or each MoS component
        acts = self.probe(trainer).activations(trainer, pl_module, step)
        if not trainer.is_global_zero:
            return None
        rows = head_metric_rows(heads, spectrum=self._spectrum_step(trainer, step))
        rows += anisotropy_rows(acts)  # every (layer, component), as the offline analysis
        import pandas as pd

        head_kl = head_series(pd.DataFrame(rows).assign(step=step), "kl_uniform")  # a mixture's: mean of its heads
        self.rule.add_kl(step, float(head_kl["value"].iloc[0]))
        return rows

    def on_validation_end(self, trainer, pl_module) -> None:
        if not self.enabled or trainer.sanity_checking or not trainer.is_global_zero:
            return
        val = trainer.callback_metrics.get("val_loss")
        if val is None:
            return
        step = trainer.global_step
        event = self.rule.update(step, float(val))
        if event is not None:
            self.events.append(event)
            with open(RunLayout(trainer.default_root_dir).events, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(event) + "\n")
            self.record(trainer, pl_module, step, [{"layer": -1, "component": "head", "metric": "saturation_event", "value": 1.0}])
            rank_zero_warn(f"[lmdynamics] saturation at step {step}: validation loss {event['val_loss']:.4f} has stayed above its "
                           f"minimum {event['best_val_loss']:.4f} (step {event['best_step']}) for {self.rule.patience} validations while "
                           f"the head's KL-to-uniform jumped to {event['kl_uniform']:.4f} (from {event['kl_uniform_reference']:.4f})")
