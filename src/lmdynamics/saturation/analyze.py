"""The saturation analysis end to end: pick a series (harness results or a tidy table), detect saturation
per model, compare with the head signals, write ``saturation.csv``, ``report.md`` and figures.

Everything is computed and drawn in a hidden staging folder beside the output first, then moved into
place, so bad input or a crash leaves no partial output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pandas as pd

from lmdynamics import store
from lmdynamics.summaries import short_name

from . import harness
from .detect import MARGIN, MIN_FRACTION, SeriesError, detect
from .signals import moved_first

CSV_COLUMNS = ["model", "task", "metric", "higher_is_better", "best_step", "best_value", "final_step", "final_value",
               "gap", "onset_step", "saturated", "checkpoints"]


class InputError(ValueError):
    """Input the analysis cannot use; the message is one line naming the problem and the fix."""


@dataclass
class Series:
    """The rows of the analysed metric (columns model, step, value), where they came from, and all rows."""

    metric: str
    rows: pd.DataFrame
    frame: pd.DataFrame
    directions: dict[str, bool] = field(default_factory=dict)
    source: str = ""
    ingested: bool = False  # rows read from result files (written to OUT/metrics.parquet), not from a table


def parse_pairs(text: str, what: str, cast=float) -> dict:
    """``name=value,...`` (command-line option ``what``) as a dict; one clear error for a malformed item."""
    out = {}
    for item in filter(None, (x.strip() for x in (text or "").split(","))):
        key, sep, value = item.rpartition("=")
        key = key.strip()
        try:
            out[key] = cast(value)
        except ValueError:
            sep = ""
        if not sep or not key:
            raise InputError(f"{what}: {item!r} is not name=number")
    return out


def _listing(names) -> str:
    names = sorted(set(names))
    return ", ".join(names[:40]) + (f", ... ({len(names)} in all)" if len(names) > 40 else "")


def from_evals(directory: str | os.PathLike, task: str, metric: str, tokens_per_step: int | None = None) -> Series:
    """The ``<task>/<metric>`` rows of every harness result file under ``directory``."""
    try:
        frame, directions = harness.read_evals(directory, tokens_per_step)
    except harness.HarnessError as err:
        raise InputError(str(err)) from None
    tasks = {m.rsplit("/", 1)[0] for m in frame.metric}
    if task not in tasks:
        raise InputError(f"task {task!r} is in no result file under {directory}; available: {_listing(tasks)}")
    name = harness.metric_name(task, metric)
    if name not in set(frame.metric):
        have = {m.rsplit("/", 1)[1] for m in frame.metric if m.rsplit("/", 1)[0] == task}
        raise InputError(f"metric {metric!r} of task {task!r} is in no result file under {directory}; "
                         f"available: {_listing(have)}")
    return Series(name, frame[frame.metric == name], frame, directions, f"lm-eval results under {directory}", True)


def from_table(path: str | os.PathLike, metric: str, task: str | None = None) -> Series:
    """The model-level (layer -1) rows of ``metric`` (``<task>/<metric>`` with a task) in a tidy table."""
    try:
        frame = store.load_table(path)
    except (FileNotFoundError, ValueError) as err:
        raise InputError(str(err)) from None
    name = harness.metric_name(task, metric) if task else metric
    rows = frame[(frame.metric == name) & (frame.layer == -1)]
    if rows.empty:
        have = frame[frame.layer == -1].metric
        raise InputError(f"metric {name!r} has no model-level rows in the table at {path}; available: {_listing(have)}")
    dup = rows.duplicated(subset=["model", "step"], keep=False)
    if dup.any():
        r = rows[dup].iloc[0]
        raise InputError(f"{name} of model {r.model} has several rows at step {r.step} (several runs or components "
                         f"of one model in {path}); analyse one run's table at a time")
    return Series(name, rows, frame, {}, f"tidy table {path}")


def with_measures(series: Series, path: str | os.PathLike) -> Series:
    """Add the rows of another tidy table (e.g. ``lmdynamics analyze`` over the same checkpoints: head spectrum,
    anisotropy) for the side-by-side figure; its models are matched to the series' by name, or by the name
    without the hub organisation (``EleutherAI/pythia-160m`` -> ``pythia-160m``)."""
    try:
        extra = store.load_table(path)
    except (FileNotFoundError, ValueError) as err:
        raise InputError(f"--measures: {err}") from None
    names = set(series.rows.model)
    extra = extra.assign(model=[m if m in names else short_name(m) for m in extra.model])
    if not names & set(extra.model):
        raise InputError(f"--measures {path}: none of its models ({_listing(extra.model)}) is one of the analysed "
                         f"models ({_listing(names)})")
    frame = pd.concat([series.frame, extra[~extra.metric.isin(set(series.frame.metric))]], ignore_index=True)
    return Series(series.metric, series.rows, frame, series.directions, series.source + f" with measures from {path}",
                  series.ingested)


def detect_all(series: Series, higher_is_better: bool | None = None, min_fraction: float = MIN_FRACTION,
               margin: float = MARGIN) -> pd.DataFrame:
    """``saturation.csv`` rows: one per model (columns ``CSV_COLUMNS`` plus the head-signal verdicts)."""
    up = higher_is_better if higher_is_better is not None else harness.higher_is_better(series.metric, series.directions)
    task, _, name = series.metric.rpartition("/")
    out = []
    for model, rows in series.rows.groupby("model", sort=True):
        rows = rows.sort_values("step")
        try:
            fields = detect(rows.step.to_numpy(), rows.value.to_numpy(), up, min_fraction, margin,
                            what=f"{series.metric} of {model}")
        except SeriesError as err:
            raise InputError(f"{err} (from {series.source})") from None
        record = {"model": model, "task": task, "metric": name, **fields.as_dict()}
        for signal, verdict in moved_first(series.frame, model, fields, min_fraction=min_fraction, margin=margin).items():
            record[f"{signal}_moved"] = verdict["moved"]
            record[f"{signal}_onset_step"] = verdict["onset_step"]
            record[f"{signal}_moved_first"] = verdict["first"]
        out.append(record)
    frame = pd.DataFrame(out)
    return frame[CSV_COLUMNS + [c for c in frame.columns if c not in CSV_COLUMNS]]
