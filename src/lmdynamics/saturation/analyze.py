"""The saturation analysis end to end: pick a series (harness results or a tidy table), detect saturation
per model, compare with the head signals, write ``saturation.csv``, ``report.md`` and figures.

Everything is computed and drawn in a hidden staging folder beside the output first, then moved into
place, so bad input or a crash leaves no partial output.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lmdynamics.analysis.report import load_table
from lmdynamics.analysis.summaries import short_name
from lmdynamics import store
from lmdynamics.atomic import staged_dir

from . import harness, scaling
from .detect import MARGIN, MIN_FRACTION, SeriesError, detect
from .figures import plot_curves, plot_side_by_side
from .signals import SIGNALS, moved_first

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
        frame = load_table(path)
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
        extra = load_table(path)
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


def _yes_no(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else ("yes" if value else "no")


def report_text(results: pd.DataFrame, series: Series, figures: list[Path], min_fraction: float, margin: float) -> str:
    lines = [f"# Saturation: {series.metric}", "", f"Source: {series.source}.", "",
             f"Best checkpoint: the best value at or after {min_fraction:g} of training; gap: worse / better - 1 of "
             f"the final value against it; saturated: gap > {margin:g}; onset: the last checkpoint, at or after "
             f"the best one, whose running median of 3 checkpoints is within {margin / 2:g} (relative) of the best "
             "(definitions: `lmdynamics.saturation.detect`). A head signal moved first if the same detector, in "
             "the signal's degradation direction (KL-to-uniform up, ER down, anisotropy up), flags it and its "
             "onset is at or before the curve's (`lmdynamics.saturation.signals`).", "",
             "| model | best step | best | final step | final | gap | onset | saturated | "
             + " | ".join(f"{s} moved first" for s in SIGNALS) + " |",
             "|---" * (8 + len(SIGNALS)) + "|"]
    for _, r in results.iterrows():
        onset = "—" if math.isnan(r.onset_step) else f"{int(r.onset_step)}"
        lines.append(f"| {r.model} | {r.best_step} | {r.best_value:.4g} | {r.final_step} | {r.final_value:.4g} | "
                     f"{r.gap:+.1%} | {onset} | {_yes_no(r.saturated)} | "
                     + " | ".join(_yes_no(r[f"{s}_moved_first"]) for s in SIGNALS) + " |")
    lines += ["", "## Per model", ""]
    for _, r in results.iterrows():
        if r.saturated:
            moved = [SIGNALS[s][0] for s in SIGNALS if r[f"{s}_moved_first"] is True]
            missing = [s for s in SIGNALS if r[f"{s}_moved"] is None]
            head = (f"head signals that moved first: {', '.join(moved)}" if moved else "no head signal moved first")
            if len(missing) == len(SIGNALS):
                head = "no head signal in the table (give --measures a table with head_rank rows)"
            elif missing:
                head += f" (not in the table: {', '.join(missing)})"
            lines.append(f"- **{r.model}**: saturation detected; final {r.gap:+.1%} vs best (step {r.best_step}), "
                         f"onset at step {int(r.onset_step)}; {head}.")
        else:
            moved = [f"{SIGNALS[s][0]} (from step {int(r[f'{s}_onset_step'])})" for s in SIGNALS if r[f"{s}_moved"] is True]
            still = [SIGNALS[s][0] for s in SIGNALS if r[f"{s}_moved"] is False]
            head = "; ".join(filter(None, [f"moved by more than the margin: {', '.join(moved)}" if moved else "",
                                            f"did not move: {', '.join(still)}" if still else ""]))
            lines.append(f"- **{r.model}**: no saturation detected (final {r.gap:+.1%} vs best at step {r.best_step})"
                         + (f"; head signals {head}" if head else "") + ".")
    lines += _component_lines(results)
    lines += ["", "## Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in figures]
    return "\n".join(lines) + "\n"


def _component_lines(results: pd.DataFrame) -> list[str]:
    """A mixture of softmaxes' component heads, each judged on its own (its mean is the head signal above)."""
    names = [c.removesuffix("_moved") for c in results.columns if c.endswith("]_moved")]
    if not names:
        return []
    lines = ["", "## Mixture components (each component head's own signal; the head signals above are their mean)", "",
             "| model | signal | moved | onset | moved first |", "|---|---|---|---|---|"]
    for _, r in results.iterrows():
        for name in names:
            onset = r[f"{name}_onset_step"]
            if all(pd.isna(r[f"{name}_{field}"]) for field in ("moved", "onset_step", "moved_first")):
                continue  # another model's component, or too few rows for a verdict
            lines.append(f"| {r.model} | {name} | {_yes_no(r[f'{name}_moved'])} | "
                         f"{'—' if pd.isna(onset) else int(onset)} | {_yes_no(r[f'{name}_moved_first'])} |")
    return lines


def scaling_section(law: scaling.Law, table: pd.DataFrame, large) -> str:
    lines = ["", "## Scaling-law gap", "",
             f"L(N, T) = A/N^alpha + B/T^beta + E with B = {law.B:g}, beta = {law.beta:g}, E = {law.E:g} fixed and "
             f"A = {law.A:.5g}, alpha = {law.alpha:.4g} fitted on {', '.join(large)} (Godey et al. report "
             f"A = {scaling.PAPER_FIT['A']}, alpha = {scaling.PAPER_FIT['alpha']} on Pythia's large models). "
             "Gap = observed / predicted - 1 (`lmdynamics.saturation.scaling`).", "",
             "| model | N | final step | final gap | best step | best gap |", "|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        lines.append(f"| {r.model}{' (large)' if r.large else ''} | {r.N:.4g} | {r.final_step} | {r.final_gap:+.1%} | "
                     f"{r.best_step} | {r.best_gap:+.1%} |")
    return "\n".join(lines) + "\n"


def write(out: str | os.PathLike, series: Series, higher_is_better: bool | None = None,
          min_fraction: float = MIN_FRACTION, margin: float = MARGIN, large=None, params=None, fixed=None) -> Path:
    """Detect, draw and report into ``out`` (``saturation.csv``, ``report.md``, ``figures/``; the ingested
    harness rows as ``metrics.parquet``; with ``large``
    models also the scaling-law gap: ``scaling.csv`` and its figure); returns the report."""
    results = detect_all(series, higher_is_better, min_fraction, margin)
    law = None
    if large:
        if results.higher_is_better.any():
            raise InputError(f"the scaling-law gap needs a loss or perplexity; {series.metric} is higher-is-better")
        try:
            law, gap_table = scaling.gaps(series.rows, series.metric, large, params, fixed, min_fraction)
        except scaling.ScalingError as err:
            raise InputError(str(err)) from None
    out = Path(out)
    with staged_dir(out) as stage:
        (stage / "figures").mkdir(parents=True)
        figures = [plot_curves(series.rows, results, series.metric, stage / "figures" / "saturation_curves.png")]
        figures += [plot_side_by_side(series.rows, series.frame, r.to_dict(), series.metric, stage / "figures")
                    for _, r in results.iterrows()]
        results.to_csv(stage / "saturation.csv", index=False)
        if series.ingested:  # every ingested metric, for the other figure tools (analysis/report.py --table OUT)
            store.append(store.table_path(stage), series.frame[series.frame.component == harness.COMPONENT])
        text = report_text(results, series, figures, min_fraction, margin)
        if law is not None:
            figure = scaling.plot(series.rows, series.metric, law, gap_table, stage / "figures" / "scaling_law.png")
            gap_table.to_csv(stage / "scaling.csv", index=False)
            text += scaling_section(law, gap_table, large) + f"\n![scaling_law](figures/{figure.name})\n"
        (stage / "report.md").write_text(text, encoding="utf-8")
    return out / "report.md"
