"""Planning an offline analysis: the models and steps, the references of each CKA kind, what is done, and the
units of work of the two phases.

A (run, step, kind) is done when the table holds every metric the catalogue says that kind writes
(``lmdynamics.catalogue.produced_by``): an analysis re-run after a metric was added to the catalogue
computes it for the checkpoints analysed before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lmdynamics import catalogue
from lmdynamics.checkpoints import CheckpointError, HubSource, RunSource, open_source
from lmdynamics.checkpoints.steps import PYTHIA_FINAL_STEP

CKA_KINDS = ("cka_final", "cka_prev", "cka_ref")


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


def parse_reference(reference) -> tuple[str | None, int | None]:
    """``13000`` -> (None, 13000); ``"EleutherAI/pythia-160m@step143000"`` -> (spec, 143000)."""
    if reference is None:
        return None, None
    if isinstance(reference, int) or str(reference).removeprefix("step").isdigit():
        return None, int(str(reference).removeprefix("step"))
    spec, sep, step = str(reference).rpartition("@")
    if not sep or not step.removeprefix("step").isdigit():
        raise ValueError(f"reference {reference!r} must be a step (13000) or MODEL@stepN")
    return spec, int(step.removeprefix("step"))


def done_units(table: pd.DataFrame, analyses=catalogue.ANALYSES) -> set[tuple[str, int, str]]:
    """The (run, step, kind) whose rows are all in the table: every metric of the kind in the catalogue."""
    done: set[tuple[str, int, str]] = set()
    if table.empty:
        return done
    present = table.groupby(["run", "step"])["metric"].agg(set)
    for kind in analyses:
        needed = set(catalogue.produced_by(kind))
        if not needed:
            continue
        done.update((run, int(step), kind) for (run, step), metrics in present.items() if needed <= metrics)
    return done


#: ``fail(spec, model name, step, kind, error, record)``: how the planner reports a model it cannot open.
Fail = Callable[[str, str, int, str, BaseException, bool], None]


def build_plans(cfg, fail: Fail) -> tuple[list[ModelPlan], tuple[str | None, int | None]]:
    """The plan of every model of an analysis config (its steps, its final step for ``cka_final`` and the
    activation-only steps the references need) and the CKA reference (spec or None, step). A model that cannot
    be opened is reported through ``fail`` (its plan left out); a reference model likewise."""
    plans: list[ModelPlan] = []
    ref_spec, ref_step = parse_reference(cfg.reference) if "cka_ref" in cfg.analyses else (None, None)
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
            fail(spec, name, -1, "source", err, False)  # recorded by the runner once there is work
            continue
        plan = ModelPlan(spec, source, steps, final)
        if "cka_final" in cfg.analyses and final not in steps:
            plan.extra.add(final)
        plans.append(plan)
    if ref_spec is None and ref_step is not None:
        for plan in plans:
            if ref_step not in plan.steps:
                plan.extra.add(ref_step)
    elif ref_spec is not None and any(p.spec == ref_spec for p in plans):
        next(p for p in plans if p.spec == ref_spec).extra.add(ref_step)
    elif ref_spec is not None:
        try:
            plans.append(ModelPlan(ref_spec, open_source(ref_spec, tokens_per_step=cfg.tokens_per_step), [], None, {ref_step}))
        except (CheckpointError, ValueError) as err:
            fail(ref_spec, ref_spec, ref_step, "reference", err, True)
    return plans, (ref_spec, ref_step)


def cka_reference(plans: list[ModelPlan], reference: tuple[str | None, int | None], i: int, step: int,
                  kind: str) -> tuple[int, int] | None:
    """(plan index, step) of the activations a CKA kind compares plan ``i`` at ``step`` with: its final step, its
    previous analysed step (None for the first), or the reference (its own step, or another model's)."""
    plan = plans[i]
    if kind == "cka_final":
        return i, plan.final_step
    if kind == "cka_prev":
        k = plan.steps.index(step)
        return (i, plan.steps[k - 1]) if k > 0 else None
    spec, ref_step = reference
    if spec is None:
        return i, ref_step
    for j, other in enumerate(plans):
        if other.spec == spec:
            return j, ref_step
    return None


def plan_work(plans: list[ModelPlan], reference, analyses, done: set[tuple[str, int, str]],
              cache_valid: Callable[[str, int], bool]):
    """(phase 1 units, phase 2 units), lists of (plan index, step, kinds): phase 1 computes weights and
    activations (and caches the activations every CKA unit needs, unless ``cache_valid``); phase 2 the CKA kinds
    whose references exist. Units already ``done`` (``done_units``) are left out."""
    phase1: dict[tuple[int, int], set[str]] = {}
    phase2: list[tuple[int, int, set[str]]] = []
    need_cache: set[tuple[int, int]] = set()
    for i, plan in enumerate(plans):
        for step in plan.steps:
            kinds = {k for k in ("weights", "activations") if k in analyses and (plan.run, step, k) not in done}
            if kinds:
                phase1[(i, step)] = kinds
            cka = set()
            for kind in CKA_KINDS:
                if kind not in analyses or (plan.run, step, kind) in done:
                    continue
                ref = cka_reference(plans, reference, i, step, kind)
                if ref is None:
                    continue
                cka.add(kind)
                need_cache.add(ref)
            if cka:
                need_cache.add((i, step))
                phase2.append((i, step, cka))
    for i, step in sorted(need_cache):
        if not cache_valid(plans[i].run, step):
            phase1.setdefault((i, step), set()).add("cache")
    units1 = [(i, step, kinds) for (i, step), kinds in sorted(phase1.items())]
    return units1, phase2
