"""Planning an offline analysis: the models and steps, the references of each CKA kind, and what is done.

A (run, step, kind) is done when the table holds every metric the catalogue says that kind writes
(``lmdynamics.catalogue.produced_by``): an analysis re-run after a metric was added to the catalogue
computes it for the checkpoints analysed before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from lmdynamics import catalogue
from lmdynamics.checkpoints import HubSource, RunSource

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
