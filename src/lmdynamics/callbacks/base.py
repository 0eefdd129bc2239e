"""What every measuring callback shares: the cadence, the probe, one capture per step, the record.

The probe capture and the row-making functions are the very ones the offline analysis uses
(``lmdynamics.probes.capture``, ``lmdynamics.measure``): live and offline numbers agree by construction.

Wiring is explicit: the training CLI hands each measuring callback the run's probe and checkpoint schedule
(:meth:`MeasurementCallback.attach`); no callback looks another up.

Distributed: the probe is split over ranks and each rank runs its share through its model (under ZeRO-3
every rank must take part in the forward pass anyway); activations are gathered to rank 0, which computes
the metrics once, writes the table and logs (``lmdynamics.distributed``).
"""

from __future__ import annotations

import time

import lightning as L

from .. import store
from ..checkpoints.steps import pythia_schedule
from ..layout import RunLayout, tokens_at
from ..measure import tag_rows
from .probe import Probe


class MeasurementCallback(L.Callback):
    """Measures at the steps of a Pythia-style schedule and records rows in the run's tidy table and loggers.

    Args:
        every: measure every ``every`` steps after the log-spaced start; empty: follow the checkpoint schedule.
        log_cap: last power-of-two step measured (default: ``every``).
        enabled: switch the callback off without deleting its section.
    """

    def __init__(self, every: int | None = None, log_cap: int | None = None, enabled: bool = True):
        if every is not None and every <= 0:
            raise ValueError(f"{type(self).__name__}: every must be a positive number of steps (got {every}); leave it empty to follow the checkpoint schedule")
        self.every, self.log_cap, self.enabled = every, log_cap, enabled
        self.steps: set[int] = set()
        self.measured: set[int] = set()
        self.seconds = 0.0  # wall time spent measuring, recorded at the end of fit
        self._probe: Probe | None = None
        self.checkpoint_schedule: tuple[int, int | None] | None = None  # (every, log_cap) of the HF checkpoints
        self.checkpoint_steps: set[int] | None = None  # the run's checkpoint steps (None: no checkpoints)

    # -- wiring ---------------------------------------------------------------------------------
    def attach(self, probe: Probe | None = None, checkpoint_schedule: tuple[int, int | None] | None = None) -> None:
        """Give this callback the run's probe and the (every, log_cap) of its checkpoint schedule (what an
        empty ``every`` follows). The training CLI calls this for every measuring callback."""
        self._probe, self.checkpoint_schedule = probe, checkpoint_schedule

    def probe(self, trainer=None) -> Probe:
        if self._probe is None:
            raise ValueError(f"{type(self).__name__} needs the Probe callback (the `probe:` section)")
        return self._probe

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or not self.enabled:
            return
        if self.checkpoint_schedule is not None:
            self.checkpoint_steps = set(pythia_schedule(trainer.max_steps, *self.checkpoint_schedule))
        if self.every is None:
            if self.checkpoint_schedule is not None:
                self.steps = set(pythia_schedule(trainer.max_steps, *self.checkpoint_schedule))
                return
            self.every = max(1, trainer.max_steps // 10)
        self.steps = set(pythia_schedule(trainer.max_steps, self.every, self.log_cap))

    def on_train_start(self, trainer, pl_module) -> None:
        if self.enabled and trainer.global_step == 0 and 0 in self.steps:
            self._run(trainer, pl_module, 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.enabled or (batch_idx + 1) % trainer.accumulate_grad_batches:
            return
        if trainer.global_step in self.steps:
            self._run(trainer, pl_module, trainer.global_step)

    def _run(self, trainer, pl_module, step: int) -> None:
        if step in self.measured:
            return
        self.measured.add(step)
        start = time.perf_counter()
        rows = self.measure(trainer, pl_module, step)
        if trainer.is_global_zero and rows:
            self.record(trainer, pl_module, step, rows)
        self.seconds += time.perf_counter() - start

    def on_fit_end(self, trainer, pl_module) -> None:
        """Record the time this callback spent measuring (``measure_seconds``, component = callback name)."""
        if self.enabled and trainer.is_global_zero:
            row = {"layer": -1, "component": type(self).__name__, "metric": "measure_seconds", "value": self.seconds}
            self.record(trainer, pl_module, trainer.global_step, [row], log=False)

    def measure(self, trainer, pl_module, step: int) -> list[dict] | None:
        """Rows ``{layer, component, metric, value}`` on rank 0 (None elsewhere). Runs on every rank."""
        raise NotImplementedError

    # -- the record -----------------------------------------------------------------------------
    @staticmethod
    def record(trainer, pl_module, step: int, rows: list[dict], log: bool = True) -> None:
        """Append rows to ``<run>/metrics.parquet`` and log them as scalars (``metric/layerNN/component``)."""
        layout = RunLayout(trainer.default_root_dir)
        store.append(layout.table, tag_rows(rows, layout.name, pl_module.spec.name, step,
                                            tokens_at(step, pl_module.tokens_per_step)))
        if not log:
            return
        scalars = {}
        for r in rows:
            if r.get("index", store.NO_INDEX) != store.NO_INDEX:  # one entry of a vector (a spectrum): table only
                continue
            where = f"layer{r['layer']:02d}/{r['component']}" if r["layer"] >= 0 else r["component"]
            scalars[f"{r['metric']}/{where}"] = r["value"]
        from .table_logger import TidyTableLogger

        for logger in trainer.loggers:
            if not isinstance(logger, TidyTableLogger):
                logger.log_metrics(scalars, step=step)
