"""The offline analysis: checkpoints -> weight metrics and probe activations -> CKA -> the tidy table.

Work is planned per (model, step) in two phases, each sharded over the ranks of a Lightning Fabric launch
(rank r takes units r, r + world, ...):

1. per checkpoint: weight metrics streamed tensor by tensor (``weights``); one forward pass over the probe
   whose activations are cached in ``<cache>/<run>/stepN.safetensors`` with anisotropy and probe loss rows
   (``activations``);
2. after a barrier, CKA of every (layer, component) to the final checkpoint, the previous analysed step or
   a chosen reference (``cka_final``, ``cka_prev``, ``cka_ref``) from the cached activations only.

Resumable: a (model, step, kind) whose rows are all in ``<out>/metrics.parquet`` is skipped (each kind of
one checkpoint is one atomic append; "all" is what the catalogue says the kind writes, see
``offline.plan``), and a valid cached activation file spares the forward pass. A checkpoint that fails
(missing revision, corrupt file, tokenizer mismatch, run without checkpoints) is reported in one line,
recorded under ``<out>/failures/`` and in ``<out>/summary.json`` (``offline.failures``); the others are
still analysed and the command exits non-zero. Configuration: ``offline.config``; command line:
``commands.analyze`` (run under Fabric by ``offline.fabric_run``).
"""

from __future__ import annotations

import json
import os
import time
import uuid
import warnings
from pathlib import Path

import pandas as pd
import torch

from lmdynamics import store
from lmdynamics.offline.config import AnalysisConfig, dump_config
from lmdynamics.offline.failures import Failure, FailureLog, one_line, with_fix
from lmdynamics.offline.plan import ModelPlan, build_plans, cka_reference, done_units, plan_work
from lmdynamics.atomic import write_text_atomic
from lmdynamics.checkpoints import CheckpointError, RunSource, check_weight_files, iter_tensors
from lmdynamics.layout import slug, step_name
from lmdynamics.measure import anisotropy_rows, cka_rows, probe_loss_rows, tag_rows, weight_metric_rows
from lmdynamics.probes import ProbeSet, capture, load_tokenizer, open_activations, probe_from_source, save_activations
from lmdynamics.probes.sources import tokenizer_fingerprint


class Runner:
    """Runs one analysis; see the module docstring. ``rank``/``world`` shard the work."""

    def __init__(self, config: AnalysisConfig, rank: int = 0, world: int = 1, device: torch.device | str = "cpu",
                 barrier=None, broadcast=None, write_report=None):
        self.cfg = config
        self.write_report = write_report  # (table, out_dir) -> path: the report layer's, given by the command
        self.rank, self.world = rank, world
        self.device = torch.device(device)
        self.barrier = barrier or (lambda: None)
        self.broadcast = broadcast or (lambda obj: obj)
        self.out = Path(config.out)
        self.table = store.table_path(self.out)
        self.failures: list[Failure] = []
        self.failed_steps: set[tuple[str, int]] = set()
        self.failure_log = FailureLog(self.out)
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
        failure = Failure(run, model, int(step), kind, one_line(err))
        self.failures.append(failure)
        self.failed_steps.add((run, int(step)))
        if not record:
            return
        self.log(failure.line())
        self.failure_log.write(failure)

    def _clear_failure(self, run: str, step: int, kind: str) -> None:
        self.failure_log.clear(run, step, kind)

    def build_plans(self) -> None:
        self.plans, self.reference = build_plans(self.cfg, lambda spec, name, step, kind, err, record:
                                                 self.fail(spec, name, step, kind, err, record=record and self.rank == 0))

    def _record_source_failures(self) -> None:
        """No model could be opened: bad input, one line and nothing written. Otherwise the models that could
        not be opened are recorded as failures beside the work on the others."""
        sources = [f for f in self.failures if f.kind == "source"]
        if sources and not self.plans:
            raise ValueError("; ".join(f.error for f in sources))
        if self.rank == 0:
            for failure in sources:
                self.log(failure.line())
                self.failure_log.write(failure)

    def cache_path(self, run: str, step: int) -> Path:
        return self.cfg.cache_dir / slug(run) / f"{step_name(step)}.safetensors"

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
        """(phase 1 units, phase 2 units): lists of (plan index, step, kinds) (``plan.plan_work``)."""
        return plan_work(self.plans, self.reference, self.cfg.analyses, done, self.cache_valid)

    def _cka_reference(self, i: int, step: int, kind: str) -> tuple[int, int] | None:
        return cka_reference(self.plans, self.reference, i, step, kind)

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
            self.fail(plan.run, plan.source.model, step, "checkpoint", with_fix(err, plan.source, step))
            return "failed"
        self._clear_failure(plan.run, step, "checkpoint")
        tag = dict(run=plan.run, model=plan.source.model, step=step, tokens=ckpt.tokens)
        if "weights" in kinds:
            t = time.perf_counter()
            try:
                tensors = ((name, t.to(self.device)) for name, t in iter_tensors(ckpt.weight_files()))  # GPU when the run has one
                rows = weight_metric_rows(tensors, ckpt.num_heads, spectrum=cfg.spectrum != "none",
                                          tied_head=bool(ckpt.config.get("tie_word_embeddings")))
                store.append(self.table, tag_rows(rows, **tag))
                self._clear_failure(plan.run, step, "weights")
            except Exception as err:  # noqa: BLE001 - recorded; the other checkpoints go on
                self.fail(plan.run, plan.source.model, step, "weights", with_fix(err, plan.source, step))
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
                rows = cka_rows(acts, ref, kind, self.cfg.debiased)
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
        return self.failure_log.this_invocation()

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
        self.failure_log.invocation = self.invocation
        self.build_plans()
        self._record_source_failures()
        self.prepare()
        done = done_units(store.read_table(self.table))
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
        if self.write_report is None:
            self.console.print("no report writer given: the table is written, no figures or report", markup=False)
            return
        try:
            self.write_report(table, self.out / "report")
            self.console.print(f"report written to {self.out / 'report'}", markup=False)
        except Exception as err:  # noqa: BLE001 - the table is the product; a plotting problem must not hide it
            self.console.print(f"warning: the report could not be written ({type(err).__name__}: {err})", markup=False)


