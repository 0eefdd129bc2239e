"""What every measuring callback shares: the cadence, the probe, one capture per step, the record.

The probe capture and the row-making functions are the very ones the offline analysis uses
(``lmdynamics.probes.capture``, ``lmdynamics.measure``): live and offline numbers agree by construction.

Distributed: the probe is split over ranks and each rank runs its share through its model (under ZeRO-3
every rank must take part in the forward pass anyway); activations are gathered to rank 0, which computes
the metrics once, writes the table and logs. Sharded (ZeRO-3) parameters are gathered one at a time.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch

from .. import store
from ..measure import is_head_weight, tag_rows
from ..probes import Activations, ProbeSet, capture
from .schedule import pythia_schedule

PROBE_FILE = "probe.safetensors"


def run_dir(trainer) -> Path:
    return Path(trainer.default_root_dir)


def tokens_at(pl_module, step: int) -> int:
    return int(step * pl_module.tokens_per_step)


def is_zero3_param(p: torch.Tensor) -> bool:
    return hasattr(p, "ds_id")


def iter_full_parameters(model: torch.nn.Module, skip=lambda name: False) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, full CPU tensor)`` for every parameter, gathering a ZeRO-3 shard one parameter at a time.

    Must be consumed on every rank under ZeRO-3 (the gather is collective); the yielded tensors are copies.
    """
    for name, p in model.named_parameters():
        if skip(name):
            continue
        if is_zero3_param(p):
            import deepspeed

            with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                yield name, p.detach().to("cpu", copy=True)
        else:
            yield name, p.detach().to("cpu")


def gathered_weight(model: torch.nn.Module, name: str) -> torch.Tensor:
    """One named parameter in full (CPU copy), gathered if sharded."""
    param = dict(model.named_parameters())[name]
    ctx = contextlib.nullcontext()
    if is_zero3_param(param):
        import deepspeed

        ctx = deepspeed.zero.GatheredParameters([param], modifier_rank=None)
    with ctx:
        return param.detach().to("cpu", copy=True)


def head_parameter_name(model: torch.nn.Module) -> str:
    for name, _ in model.named_parameters():
        if is_head_weight(name):
            return name
    raise ValueError("the model has no output head (embed_out / lm_head)")


class Probe(L.Callback):
    """The probe set, fixed at the start of fit from the validation split and saved as ``<run>/probe.safetensors``.

    Args:
        num_sequences: validation blocks in the probe (the paper used 128).
        positions: ``last`` (one vector per sequence: the last token, the paper's choice) or an int P of
            positions sampled per sequence (more vectors, a better CKA estimate).
        seed: which blocks and positions are drawn.
        batch_size: probe sequences per forward pass.
        per_head: also capture each head's OV activation (``ov_headNN``); large models may turn this off
            (per-step activation files grow with layers x heads).
    """

    def __init__(self, num_sequences: int = 128, positions: str | int = "last", seed: int = 0, batch_size: int = 32,
                 per_head: bool = True):
        if num_sequences <= 0:
            raise ValueError(f"probe.num_sequences must be positive, got {num_sequences}")
        if positions != "last" and not (isinstance(positions, int) and positions > 0):
            raise ValueError(f"probe.positions must be 'last' or a positive int, got {positions!r}")
        self.num_sequences, self.positions, self.seed, self.batch_size = num_sequences, positions, seed, batch_size
        self.components = None if per_head else ("ov", "attn", "mlp", "resid", "final")
        self.probe: ProbeSet | None = None
        self._cache: tuple[int, dict] | None = None

    def check_config(self, datamodule, spec) -> None:
        """Fail before training if the validation split cannot supply the probe."""
        available = len(datamodule.val_all)
        if self.num_sequences > available:
            raise ValueError(f"probe.num_sequences {self.num_sequences} exceeds the {available} validation blocks; lower it or raise data.val_fraction")
        if isinstance(self.positions, int) and self.positions > datamodule.context_length:
            raise ValueError(f"probe.positions {self.positions} exceeds the context length {datamodule.context_length}")

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or self.probe is not None:
            return
        dm = trainer.datamodule
        self.check_config(dm, None)
        path = run_dir(trainer) / PROBE_FILE
        fresh = ProbeSet.from_sequences(dm.val_all, num_sequences=self.num_sequences, positions=self.positions,
                                        seed=self.seed, meta={"source": "validation split", "corpus": dm.corpus_id})
        if path.is_file():  # a resumed run keeps the very same probe
            saved = ProbeSet.load(path)
            if saved.fingerprint() != fresh.fingerprint():
                raise ValueError(f"{path} differs from the probe this config draws; restore the run's config or remove the probe")
            self.probe = saved
        else:
            self.probe = fresh
            if trainer.is_global_zero:
                path.parent.mkdir(parents=True, exist_ok=True)
                fresh.save(path)

    def activations(self, trainer, pl_module, step: int) -> dict | None:
        """Probe activations of the model at ``step`` on rank 0 (None elsewhere), captured once per step."""
        if self._cache is not None and self._cache[0] == step:
            return self._cache[1]
        acts = capture_distributed(trainer, pl_module.model, self.probe, self.batch_size, self.components)
        self._cache = (step, acts)
        return acts


def capture_distributed(trainer, model, probe: ProbeSet, batch_size: int, components=None) -> dict | None:
    """``probes.capture`` with the probe's sequences split over ranks and the rows gathered to rank 0."""
    world, rank = trainer.world_size, trainer.global_rank
    if world == 1:
        return capture(model, probe, batch_size=batch_size, components=components)
    n = probe.num_sequences
    share = -(-n // world)
    idx = torch.arange(rank * share, min(n, (rank + 1) * share))
    mine = capture(model, ProbeSet(probe.input_ids[idx], probe.positions[idx]), batch_size=batch_size,
                   components=components) if len(idx) else None
    per_seq = probe.num_positions
    out = {}
    device = trainer.strategy.root_device
    # rank 0 always holds rows (share >= 1): its keys and widths tell ranks without rows how to pad
    widths = {key: x.shape[1] for key, x in mine.items()} if rank == 0 else None
    widths = trainer.strategy.broadcast(widths, src=0)
    for key, width in sorted(widths.items()):
        x = mine[key] if mine is not None else torch.zeros(0, width)
        padded = torch.zeros(share * per_seq, width, dtype=x.dtype)
        padded[: x.shape[0]] = x
        gathered = trainer.strategy.all_gather(padded.to(device)).cpu()  # [world, share*P, d]
        if rank == 0:
            rows = [gathered[r, : max(0, min(n, (r + 1) * share) - r * share) * per_seq] for r in range(world)]
            out[key] = torch.cat(rows)
    return Activations(out, metadata={"probe": probe.fingerprint()}) if rank == 0 else None


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

    # -- wiring ---------------------------------------------------------------------------------
    @staticmethod
    def find(trainer, cls):
        return next((cb for cb in trainer.callbacks if isinstance(cb, cls)), None)

    def probe(self, trainer) -> Probe:
        probe = self.find(trainer, Probe)
        if probe is None:
            raise ValueError(f"{type(self).__name__} needs the Probe callback (the `probe:` section)")
        return probe

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or not self.enabled:
            return
        if self.every is None:
            from .hf_checkpoints import HFCheckpoints

            ckpt = self.find(trainer, HFCheckpoints)
            if ckpt is not None:
                self.steps = set(pythia_schedule(trainer.max_steps, ckpt.every, ckpt.log_cap))
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
        root = run_dir(trainer)
        store.append(store.table_path(root), tag_rows(rows, root.name, pl_module.spec.name, step, tokens_at(pl_module, step)))
        if not log:
            return
        scalars = {}
        for r in rows:
            if r["component"].endswith("_spectrum"):
                continue
            where = f"layer{r['layer']:02d}/{r['component']}" if r["layer"] >= 0 else r["component"]
            scalars[f"{r['metric']}/{where}"] = r["value"]
        from .table_logger import TidyTableLogger

        for logger in trainer.loggers:
            if not isinstance(logger, TidyTableLogger):
                logger.log_metrics(scalars, step=step)
