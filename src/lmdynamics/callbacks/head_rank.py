"""HeadRank: the output head's singular spectrum, last-layer anisotropy, and a saturation monitor.

Godey et al. (2024): in small models the head's spectrum collapses and the last layer's representations
turn anisotropic as the loss saturates. Recorded: the head's ER, PER, stable rank, condition number and
KL-to-uniform of s / sum(s) at every measurement; its full normalised spectrum s / s_max at checkpoint
steps (``sv_norm`` rows of the head, the singular value's position in ``index``); anisotropy of the last layer's residual
stream and of the final hidden state on the probe. The monitor writes an event (a ``saturation_event``
row, a line in ``<run>/events.jsonl`` and a warning) when validation loss rises above its running minimum
by ``loss_margin`` while KL-to-uniform has jumped ``kl_jump`` (relative) above its own running minimum.
"""

from __future__ import annotations

import json
import math

from lightning.pytorch.utilities import rank_zero_warn

from ..catalogue import is_output_head
from ..measure import anisotropy_rows, head_metric_rows
from ..distributed import gathered_weight
from ..layout import RunLayout
from ..models.heads import head_matrices
from .base import MeasurementCallback


class HeadRank(MeasurementCallback):
    """Head spectrum, anisotropy and saturation events.

    Args:
        spectrum: the head's whole normalised spectrum (``sv_norm`` rows) at the HF checkpoint steps
            (``checkpoints``), at every measurement (``all``) or never (``none``); the offline analysis's
            ``spectrum``.
        loss_margin: nats above the running minimum of validation loss that count as a rise.
        kl_jump: relative rise of KL-to-uniform above its running minimum that counts as a jump.
        every, log_cap, enabled: see ``MeasurementCallback``.
    """

    def __init__(self, every: int | None = None, log_cap: int | None = None, enabled: bool = True,
                 spectrum: str = "checkpoints", loss_margin: float = 0.02, kl_jump: float = 0.05):
        super().__init__(every, log_cap, enabled)
        if spectrum not in ("checkpoints", "all", "none"):
            raise ValueError(f"head_rank.spectrum must be 'checkpoints', 'all' or 'none', got {spectrum!r}")
        if loss_margin < 0 or kl_jump < 0:
            raise ValueError("head_rank.loss_margin and head_rank.kl_jump must be >= 0")
        self.spectrum, self.loss_margin, self.kl_jump = spectrum, loss_margin, kl_jump
        self.kl_history: list[float] = []
        self.best_val = math.inf
        self.saturated = False
        self.events: list[dict] = []

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
        kl = next(r["value"] for r in rows if is_output_head(r["component"]) and r["metric"] == "kl_uniform")
        self.kl_history.append(kl)
        return rows

    def kl_jumped(self) -> bool:
        if len(self.kl_history) < 2:
            return False
        floor = min(self.kl_history[:-1])
        return self.kl_history[-1] > floor * (1.0 + self.kl_jump)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not self.enabled or trainer.sanity_checking or not trainer.is_global_zero:
            return
        val = trainer.callback_metrics.get("val_loss")
        if val is None:
            return
        val = float(val)
        rising = val > self.best_val + self.loss_margin
        self.best_val = min(self.best_val, val)
        if rising and self.kl_jumped() and not self.saturated:
            self.saturated = True
            step = trainer.global_step
            event = {"event": "saturation", "step": step, "val_loss": val, "best_val_loss": self.best_val,
                     "kl_uniform": self.kl_history[-1], "kl_uniform_min": min(self.kl_history[:-1])}
            self.events.append(event)
            with open(RunLayout(trainer.default_root_dir).events, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(event) + "\n")
            self.record(trainer, pl_module, step, [{"layer": -1, "component": "head", "metric": "saturation_event", "value": 1.0}])
            rank_zero_warn(f"[lmdynamics] saturation at step {step}: validation loss {val:.4f} is above its minimum {self.best_val:.4f} while the head's KL-to-uniform jumped to {self.kl_history[-1]:.4f}")
        elif not rising:
            self.saturated = False
