"""The offline analysis: checkpoints -> weight metrics and probe activations -> CKA -> the tidy table.

Work is planned per (model, step) in two phases, each sharded over the ranks of a Lightning Fabric launch
(rank r takes units r, r + world, ...):

1. per checkpoint: weight metrics streamed tensor by tensor (``weights``); one forward pass over the probe
   whose activations are cached in ``<cache>/<run>/stepN.safetensors`` with anisotropy and probe loss rows
   (``activations``);
2. after a barrier, CKA of every (layer, component) to the final checkpoint, the previous analysed step or
   a chosen reference (``cka_final``, ``cka_prev``, ``cka_ref``) from the cached activations only.

Resumable: a (model, step, kind) whose rows are in ``<out>/metrics.parquet`` is skipped (each kind of one
checkpoint is one atomic append, so "any row present" means "done"), and a valid cached activation file
spares the forward pass. A checkpoint that fails (missing revision, corrupt file, tokenizer mismatch, run
without checkpoints) is reported in one line, recorded under ``<out>/failures/`` and in
``<out>/summary.json``; the others are still analysed and the command exits non-zero.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import traceback
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pandas as pd
import torch

from lmdynamics import store
from lmdynamics.analysis.config import ANALYSES, AnalysisConfig, dump_config
from lmdynamics.checkpoints import (
    CheckpointError,
    CorruptCheckpointError,
    HubSource,
    RunSource,
    check_weight_files,
    iter_tensors,
    open_source,
)
from lmdynamics.checkpoints.steps import PYTHIA_FINAL_STEP
from lmdynamics.measure import activation_metric_rows, anisotropy_rows, probe_loss_rows, tag_rows, weight_metric_rows
from lmdynamics.probes import ProbeSet, capture, load_tokenizer, open_activations, probe_from_source, save_activations
from lmdynamics.atomic import write_text_atomic
from lmdynamics.probes.sources import tokenizer_fingerprint

CKA_KINDS = ("cka_final", "cka_prev", "cka_ref")
#: The metric whose presence in the table marks a (run, step, kind) as done.
KIND_MARKER = {"weights": "er", "activations": "anisotropy", "cka_final": "cka_final", "cka_prev": "cka_prev", "cka_ref": "cka_ref"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def slug(run: str) -> str:
    """A file-name-safe form of a run name (``EleutherAI/pythia-70m`` -> ``EleutherAI--pythia-70m``)."""
    return _UNSAFE.sub("_", run.replace("/", "--"))


@dataclass
class ModelPlan:
    """One model to analyse: its source, the steps analysed in full, and activation-only steps."""

    spec: str
    source: HubSource | RunSource
    steps: list[int]
    final_step: int | None = None
    extra: set[int] = field(default_factory=set)  # steps whose activations are needed (references) but not analysed

    @property
    def run(self) -> str:
        return self.source.run


@dataclass
class Failure:
    run: str
    model: str
    step: int
    kind: str
    error: str

    def line(self) -> str:
        where = f"{self.model} step {self.step}" if self.step >= 0 else self.model
        return f"FAILED {where} ({self.kind}): {self.error}"


class Runner:
    """Runs one analysis; see the module docstring. ``rank``/``world`` shard the work."""

    def __init__(self, config: AnalysisConfig, rank: int = 0, world: int = 1, device: torch.device | str = "cpu",
                 barrier=None, broadcast=None):
        self.cfg = config
        self.rank, self.world = rank, world
        self.device = torch.device(device)
        self.barrier = barrier or (lambda: None)
        self.broadcast = broadcast or (lambda obj: obj)
        self.out = Path(config.out)
        self.table = store.table_path(self.out)
        self.failures: list[Failure] = []
        self.failed_steps: set[tuple[str, int]] = set()
        self.invocation = ""
        self.probe: ProbeSet | None = None
        self.plans: list[ModelPlan] = []
        self._tokenizer_fp: dict[str, str] = {}
        self._probe_fp: str | None = None
        from rich.console import Console

        self.console = Console(stderr=False, highlight=False, soft_wrap=True)

    # ------------------------------------------------------------------ planning
    def log(self, message: str) -> None:
        prefix = f"[rank {self.rank}] " if self.world > 1 else ""
        self.console.print(prefix + message, markup=False)

    def fail(self, run: str, model: str, step: int, kind: str, err: BaseException | str, record: bool = True) -> None:
        """Report a failure in one line and record it (``record=False``: only remember it, for work that
        every rank plans alike and rank 0 records)."""
        msg = err if isinstance(err, str) else (str(err).splitlines()[0] if str(err) else type(err).__name__)
        if not isinstance(err, (str, CheckpointError, ValueError, FileNotFoundError)):
            msg = f"{type(err).__name__}: {msg}"
        failure = Failure(run, model, int(step), kind, msg)
        self.failures.append(failure)
        self.failed_steps.add((run, int(step)))
        if not record:
            return
        self.log(failure.line())
        write_text_atomic(self._failure_path(run, step, kind), json.dumps({**failure.__dict__, "invocation": self.invocation}))

    def _failure_path(self, run: str, step: int, kind: str) -> Path:
        return self.out / "failures" / f"{slug(run)}__step{step}__{kind}.json"

    def _clear_failure(self, run: str, step: int, kind: str) -> None:
        path = self._failure_path(run, step, kind)
        if path.exists():
            path.unlink(missing_ok=True)

    def build_plans(self) -> None:
        cfg = self.cfg
        ref_spec, ref_step = _parse_reference(cfg.reference) if "cka_ref" in cfg.analyses else (None, None)
        for spec in cfg.models:
            try:
                source = open_source(spec, tokens_per_step=cfg.tokens_per_step)
                steps = source.steps(cfg.steps)
                if isinstance(source, RunSource):
                    final = cfg.final_step if cfg.final_step is not None else source.available_steps()[-1]
                else:
                    final = cfg.final_step if cfg.final_step is not None else PYTHIA_FINAL_STEP
            except (CheckpointError, ValueError) as err:
                name = Path(spec).name if Path(spec).exists() else spec.split("/")[-1]
                self.fail(spec, name, -1, "source", err, record=self.rank == 0)
                continue
            plan = ModelPlan(spec, source, steps, final)
            if "cka_final" in cfg.analyses and final not in steps:
                plan.extra.add(final)
            self.plans.append(plan)
        if ref_spec is None and ref_step is not None:
            for plan in self.plans:
                if ref_step not in plan.steps:
                    plan.extra.add(ref_step)
        elif ref_spec is not None and any(p.spec == ref_spec for p in self.plans):
            next(p for p in self.plans if p.spec == ref_spec).extra.add(ref_step)
        elif ref_spec is not None:
            try:
                self.plans.append(ModelPlan(ref_spec, open_source(ref_spec, tokens_per_step=cfg.tokens_per_step), [], None, {ref_step}))
            except (CheckpointError, ValueError) as err:
                self.fail(ref_spec, ref_spec, ref_step, "reference", err, record=self.rank == 0)
        self.reference = (ref_spec, ref_step)

    def _prev(self, plan: ModelPlan, step: int) -> int | None:
        i = plan.steps.index(step)
        return plan.steps[i - 1] if i > 0 else None

    def cache_path(self, run: str, step: int) -> Path:
        return self.cfg.cache_dir / slug(run) / f"step{step:08d}.safetensors"

    def cache_valid(self, run: str, step: int) -> bool:
        path = self.cache_path(run, step)
        if not path.is_file() or self.probe is None:
            return False
        try:
            meta = open_activations(path).metadata
        except (ValueError, FileNotFoundError):
            return False
        have = set(meta.get("components", "").split(","))
        if self._probe_fp is None:
            self._probe_fp = self.probe.fingerprint()
        return meta.get("probe") == self._probe_fp and set(self.cfg.components) <= have

    def plan_work(self, done: set[tuple[str, int, str]]):
        """(phase 1 units, phase 2 units): lists of (plan index, step, kinds)."""
        cfg = self.cfg
        phase1: dict[tuple[int, int], set[str]] = {}
        phase2: list[tuple[int, int, set[str]]] = []
        need_cache: set[tuple[int, int]] = set()
        for i, plan in enumerate(self.plans):
            for step in plan.steps:
                kinds = {k for k in ("weights", "activations") if k in cfg.analyses and (plan.run, step, k) not in done}
                if kinds:
                    phase1[(i, step)] = kinds
                cka = set()
                for kind in CKA_KINDS:
                    if kind not in cfg.analyses or (plan.run, step, kind) in done:
                        continue
                    ref = self._cka_reference(i, step, kind)
                    if ref is None:
                        continue
                    cka.add(kind)
                    need_cache.add(ref)
                if cka:
                    need_cache.add((i, step))
                    phase2.append((i, step, cka))
        for i, step in sorted(need_cache):
            plan = self.plans[i]
            if not self.cache_valid(plan.run, step):
                phase1.setdefault((i, step), set()).add("cache")
        units1 = [(i, step, kinds) for (i, step), kinds in sorted(phase1.items())]
        return units1, phase2

    def _cka_reference(self, i: int, step: int, kind: str) -> tuple[int, int] | None:
        plan = self.plans[i]
        if kind == "cka_final":
            return i, plan.final_step
        if kind == "cka_prev":
            prev = self._prev(plan, step)
            return None if prev is None else (i, prev)
        spec, ref_step = self.reference
        if spec is None:
            return i, ref_step
        for j, other in enumerate(self.plans):
            if other.spec == spec:
                return j, ref_step
        return None

    # ------------------------------------------------------------------ probe
    def resolve_probe(self) -> ProbeSet:
        """The probe of this output directory: ``<out>/probe.safetensors`` if it exists (it must match the
        configured probe), else built from the configured source and saved there."""
        cfg = self.cfg
        fields = dict(cfg.probe.__dict__)
        for key in ("source", "tokenizer"):  # the same file however it was spelt
            if fields[key] is not None and Path(fields[key]).exists():
                fields[key] = str(Path(fields[key]).resolve())
        spec = json.dumps(fields, sort_keys=True)
        path = self.out / "probe.safetensors"
        if path.is_file():
            probe = ProbeSet.load(path)
            if probe.meta.get("spec", spec) != spec:
                raise ValueError(
                    f"{self.out} was analysed with another probe ({probe.meta.get('spec')}); "
                    f"use a new --out for a different probe"
                )
            return probe
        source = cfg.probe.source
        if source is None:
            runs = [p for p in self.plans if isinstance(p.source, RunSource)]
            if not runs:
                raise ValueError("no probe source: set probe.source (a text file, a hub dataset or a run directory) or pass --probe")
            source = str(runs[0].source.path)
        tokenizer = cfg.probe.tokenizer
        if tokenizer is None and not (Path(source).is_dir() or source.endswith(".safetensors")):
            tokenizer = self._first_tokenizer()
        probe = probe_from_source(
            source, tokenizer=tokenizer, context_length=cfg.probe.context_length, num_sequences=cfg.probe.num_sequences,
            positions=cfg.probe.positions, seed=cfg.probe.seed, split=cfg.probe.split, text_field=cfg.probe.text_field,
        )
        probe.meta["spec"] = spec
        probe.save(path)
        return probe

    def _first_tokenizer(self) -> str:
        for plan in self.plans:
            for step in [*plan.steps, *sorted(plan.extra)]:
                try:
                    found = plan.source.tokenizer_file(step)
                except CheckpointError:
                    continue
                if found is not None:
                    return str(found)
        raise ValueError("no tokenizer.json found with any checkpoint; set probe.tokenizer to a tokenizer.json file")

    # ------------------------------------------------------------------ work
    def _check_tokenizer(self, ckpt) -> None:
        top = int(self.probe.input_ids.max())
        label = f"{ckpt.model} step {ckpt.step}"
        if top >= ckpt.vocab_size:
            raise CheckpointError(
                f"probe token id {top} >= vocabulary size {ckpt.vocab_size} of {label}: the probe was tokenised with "
                f"another tokenizer; analyse models that share a tokenizer or set probe.tokenizer"
            )
        want = self.probe.meta.get("tokenizer")
        if want and ckpt.tokenizer_file is not None:
            real = os.path.realpath(ckpt.tokenizer_file)
            if real not in self._tokenizer_fp:
                self._tokenizer_fp[real] = tokenizer_fingerprint(load_tokenizer(real))
            if self._tokenizer_fp[real] != want:
                raise CheckpointError(
                    f"the tokenizer of {label} differs from the probe's tokenizer: analyse models that share a "
                    f"tokenizer, or one model family per --out"
                )

    def _load_model(self, ckpt):
        from transformers.utils import logging as hf_logging

        from lmdynamics.models.heads import load_causal_lm  # plain GPT-NeoX, or a mixture-of-softmaxes checkpoint

        hf_logging.disable_progress_bar()
        dtype = getattr(torch, self.cfg.dtype)
        model = load_causal_lm(str(ckpt.path), dtype=dtype)
        return model.to(self.device)

    def run_checkpoint(self, plan: ModelPlan, step: int, kinds: set[str]) -> str:
        """Phase 1 for one checkpoint; returns a timing summary."""
        cfg, timings = self.cfg, {}
        t0 = time.perf_counter()
        try:
            ckpt = plan.source.checkpoint(step)
            check_weight_files(ckpt.weight_files())
        except Exception as err:  # noqa: BLE001 - one line per bad checkpoint, whatever went wrong
            self.fail(plan.run, plan.source.model, step, "checkpoint", _with_fix(err, plan.source, step))
            return "failed"
        self._clear_failure(plan.run, step, "checkpoint")
        tag = dict(run=plan.run, model=plan.source.model, step=step, tokens=ckpt.tokens)
        if "weights" in kinds:
            t = time.perf_counter()
            try:
                tensors = ((name, t.to(self.device)) for name, t in iter_tensors(ckpt.weight_files()))  # GPU when the run has one
                rows = weight_metric_rows(tensors, ckpt.num_heads, spectrum=cfg.spectrum)
                store.append(self.table, tag_rows(rows, **tag))
                self._clear_failure(plan.run, step, "weights")
            except Exception as err:  # noqa: BLE001 - recorded; the other checkpoints go on
                self.fail(plan.run, plan.source.model, step, "weights", _with_fix(err, plan.source, step))
            timings["weights"] = time.perf_counter() - t
        if kinds & {"activations", "cache"}:
            t = time.perf_counter()
            try:
                self._check_tokenizer(ckpt)
                model = self._load_model(ckpt)
                acts = capture(model, self.probe, batch_size=cfg.batch_size, components=cfg.components,
                               loss=cfg.probe_loss and "activations" in kinds, device=self.device)
                del model
                meta = {"components": ",".join(sorted(cfg.components)), "run": plan.run, "step": str(step)}
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    save_activations(self.cache_path(plan.run, step), acts, dtype=getattr(torch, cfg.activations_dtype), metadata=meta)
                if "activations" in kinds:
                    store.append(self.table, tag_rows(anisotropy_rows(acts) + probe_loss_rows(acts.loss), **tag))
                self._clear_failure(plan.run, step, "activations")
            except Exception as err:  # noqa: BLE001 - recorded; the other checkpoints go on
                self.fail(plan.run, plan.source.model, step, "activations", err)
            timings["forward"] = time.perf_counter() - t
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        return f"{parts} ({time.perf_counter() - t0:.1f}s)"

    def run_cka(self, i: int, step: int, kinds: set[str], failed: set[tuple[str, int]]) -> None:
        """Phase 2 for one step: CKA rows from cached activations only. ``failed``: the (run, step) pairs
        whose phase 1 failed in this invocation (their missing activations are already reported)."""
        plan = self.plans[i]
        if not self.cache_valid(plan.run, step):
            if (plan.run, step) not in failed:
                for kind in sorted(kinds):
                    self.fail(plan.run, plan.source.model, step, kind, f"probe activations of step {step} are missing")
            return
        acts = open_activations(self.cache_path(plan.run, step))
        tokens = plan.source.tokens(step)
        for kind in sorted(kinds):
            j, ref_step = self._cka_reference(i, step, kind)
            ref_plan = self.plans[j]
            if not self.cache_valid(ref_plan.run, ref_step):
                if (ref_plan.run, ref_step) not in failed:
                    self.fail(plan.run, plan.source.model, step, kind, f"reference activations of {ref_plan.run} step {ref_step} are missing")
                continue
            try:
                ref = open_activations(self.cache_path(ref_plan.run, ref_step))
                rows = activation_metric_rows(acts, ref, metric=kind)
                if self.cfg.debiased_cka:
                    rows += activation_metric_rows(acts, ref, metric=kind, debiased=True)
                store.append(self.table, tag_rows(rows, plan.run, plan.source.model, step, tokens))
                self._clear_failure(plan.run, step, kind)
            except Exception as err:  # noqa: BLE001 - recorded; the other steps go on
                self.fail(plan.run, plan.source.model, step, kind, err)

    def _report_unusable_finals(self, failed: set[tuple[str, int]]) -> None:
        """CKA-to-final of a model whose final checkpoint failed cannot be computed for any step: say so once
        (rank 0), with the final checkpoint's own failure and fix, instead of skipping every step silently."""
        if self.rank != 0 or "cka_final" not in self.cfg.analyses:
            return
        reasons = {(r["run"], int(r["step"])): r["error"] for r in self._invocation_failures() if r["kind"] != "cka_final"}
        for plan in self.plans:
            final = plan.final_step
            if final is None or (plan.run, final) not in failed or not plan.steps:
                continue
            why = reasons.get((plan.run, final), "its activations could not be computed")
            self.fail(plan.run, plan.source.model, final, "cka_final",
                      f"no CKA-to-final for any step: the final checkpoint (step {final}) is unusable: {why}")

    def _invocation_failures(self) -> list[dict]:
        """The failure records written in this invocation by any rank (failure files carry its id)."""
        records = []
        for f in sorted((self.out / "failures").glob("*.json")):
            try:
                rec = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if rec.get("invocation") == self.invocation:
                records.append(rec)
        return records

    def _failed_steps_on_disk(self) -> set[tuple[str, int]]:
        """(run, step) pairs that failed in this invocation on any rank."""
        return set(self.failed_steps) | {(r["run"], int(r["step"])) for r in self._invocation_failures()}

    # ------------------------------------------------------------------ driver
    def prepare(self) -> None:
        """Rank 0: write the resolved config and build/check the probe. Errors reach every rank."""
        error = None
        if self.rank == 0:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
                write_text_atomic(self.out / "config.yaml", dump_config(self.cfg))
                if set(self.cfg.analyses) - {"weights"}:
                    self.resolve_probe()
            except (ValueError, FileNotFoundError, CheckpointError) as err:
                error = str(err)
            except Exception as err:  # noqa: BLE001 - every rank must hear about it, or the others wait forever
                error = f"{type(err).__name__}: {err}"
        error = self.broadcast(error)
        if error:
            raise ValueError(error)
        if set(self.cfg.analyses) - {"weights"}:
            self.probe = ProbeSet.load(self.out / "probe.safetensors")

    def run(self) -> int:
        self.invocation = self.broadcast(uuid.uuid4().hex if self.rank == 0 else None)
        self.build_plans()
        self.prepare()
        done = _done_units(store.read_table(self.table))
        units1, units2 = self.plan_work(done)
        mine1 = units1[self.rank :: self.world]
        mine2 = units2[self.rank :: self.world]
        if self.rank == 0:
            self.log(
                f"analysing {len(self.plans)} model(s): {len(units1)} checkpoint unit(s), {len(units2)} CKA unit(s) "
                f"to do on {self.world} process(es); results in {self.table}"
            )
        with self._progress() as progress:
            task = progress.add_task("checkpoints", total=len(mine1))
            for i, step, kinds in mine1:
                plan = self.plans[i]
                timing = self.run_checkpoint(plan, step, kinds)
                progress.advance(task)
                self.log(f"{plan.source.model} step {step} [{'+'.join(sorted(kinds))}]: {timing}")
            self.barrier()
            task2 = progress.add_task("cka", total=len(mine2))
            failed = self._failed_steps_on_disk()
            self._report_unusable_finals(failed)
            for i, step, kinds in mine2:
                self.run_cka(i, step, kinds, failed)
                progress.advance(task2)
        self.barrier()
        return self.finish()

    def _progress(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        return Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=self.console, disable=self.rank != 0,
        )

    def finish(self) -> int:
        failures = self._invocation_failures()
        failures.sort(key=lambda r: (r["run"], int(r["step"]), r["kind"]))
        if self.rank == 0:
            store.compact(self.table)  # a step recomputed by this invocation: one row per key for any reader
            table = store.read_table(self.table)
            summary = {"rows": len(table), "failed": failures, "models": [p.spec for p in self.plans if p.steps]}
            write_text_atomic(self.out / "summary.json", json.dumps(summary, indent=2))
            if self.cfg.report:
                self._report(table)
            if failures:
                self.console.print(f"{len(failures)} failure(s); the rest was analysed ({len(table)} rows in {self.table}):", markup=False)
                for rec in failures:
                    self.console.print("  " + Failure(**{k: rec[k] for k in ("run", "model", "step", "kind", "error")}).line(), markup=False)
            else:
                self.console.print(f"done: {len(table)} rows in {self.table}", markup=False)
        return 1 if failures else 0

    def _report(self, table: pd.DataFrame) -> None:
        try:
            from lmdynamics.analysis.report import write_report
        except ImportError:
            warnings.warn("lmdynamics.analysis.report is not available; no figures or report written", stacklevel=1)
            return
        try:
            write_report(table, self.out / "report")
            self.console.print(f"report written to {self.out / 'report'}", markup=False)
        except Exception as err:  # noqa: BLE001 - the table is the product; a plotting problem must not hide it
            self.console.print(f"warning: the report could not be written ({type(err).__name__}: {err})", markup=False)


def _with_fix(err: BaseException, source, step: int) -> BaseException:
    """A corrupt file's error with the fix that fits its source (a run's checkpoint cannot be downloaded)."""
    if isinstance(err, CorruptCheckpointError):
        return CheckpointError(err.with_fix(source.repair_hint(step)))
    return err


def _parse_reference(reference) -> tuple[str | None, int | None]:
    """``13000`` -> (None, 13000); ``"EleutherAI/pythia-160m@step143000"`` -> (spec, 143000)."""
    if reference is None:
        return None, None
    if isinstance(reference, int) or str(reference).removeprefix("step").isdigit():
        return None, int(str(reference).removeprefix("step"))
    spec, sep, step = str(reference).rpartition("@")
    if not sep or not step.removeprefix("step").isdigit():
        raise ValueError(f"reference {reference!r} must be a step (13000) or MODEL@stepN")
    return spec, int(step.removeprefix("step"))


def _done_units(table) -> set[tuple[str, int, str]]:
    done = set()
    if table.empty:
        return done
    for kind, metric in KIND_MARKER.items():
        hit = table.loc[table["metric"] == metric, ["run", "step"]].drop_duplicates()
        done.update((run, int(step), kind) for run, step in hit.itertuples(index=False))
    return done


def run_analysis(config: AnalysisConfig) -> int:
    """Run an analysis under Lightning Fabric (one process per device; ``config.devices`` > 1 or
    ``num_nodes`` > 1 launches DDP processes that share the work). Returns the exit code."""
    from lightning.fabric import Fabric
    from lightning.fabric.strategies import DDPStrategy

    world = config.devices * config.num_nodes
    # Phases can take hours; the barrier between them must not time out.
    strategy = DDPStrategy(timeout=timedelta(days=7)) if world > 1 else "auto"
    fabric = Fabric(accelerator=config.accelerator, devices=config.devices, num_nodes=config.num_nodes, strategy=strategy)
    fabric.launch()
    if fabric.device.type == "cpu" and fabric.world_size > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // config.devices))
    runner = Runner(
        config, rank=fabric.global_rank, world=fabric.world_size, device=fabric.device,
        barrier=fabric.barrier if fabric.world_size > 1 else None,
        broadcast=(lambda obj: fabric.broadcast(obj, src=0)) if fabric.world_size > 1 else None,
    )
    try:
        return runner.run()
    except ValueError as err:
        if fabric.global_rank == 0:
            print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 - print the trace, exit 1
        traceback.print_exc()
        return 1


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="analysis/run.py",
        description="Analyse checkpoints (hub revisions or local runs) into <out>/metrics.parquet; flags override the YAML.",
    )
    parser.add_argument("--config", help="analysis YAML (configs/analysis/*.yaml)")
    parser.add_argument("--models", help="comma-separated hub repo ids or run directories")
    parser.add_argument("--steps", help="preset (paper, pythia-all, every-10k, all) or comma-separated steps")
    parser.add_argument("--probe", help="probe source: a .txt/.jsonl/.parquet file, a hub dataset name or a run directory")
    parser.add_argument("--out", help="output directory (holds metrics.parquet)")
    parser.add_argument("--analyses", help=f"comma-separated subset of {','.join(ANALYSES)}")
    parser.add_argument("--reference", help="cka_ref reference: a step or MODEL@stepN")
    parser.add_argument("--accelerator", help="cpu, cuda, gpu or auto")
    parser.add_argument("--devices", type=int, help="processes per node (Lightning Fabric); >1 shards the work")
    parser.add_argument("--num-nodes", dest="num_nodes", type=int, help="nodes (Lightning Fabric)")
    parser.add_argument("--batch-size", dest="batch_size", type=int, help="probe sequences per forward pass")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The ``analysis/run.py`` command line; returns the exit code (0 ok, 1 some checkpoint failed, 2 bad input)."""
    from lmdynamics.analysis.config import load_config

    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k != "config"}
    try:
        config = load_config(args.config, overrides)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return run_analysis(config)
