"""The saturation study's outputs: ``saturation.csv``, ``report.md`` and figures of the detected curves (and,
with large models given, the scaling-law gap: ``scaling.csv`` and its figure), written into a staged folder."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from lmdynamics import store
from lmdynamics.atomic import staged_dir
from lmdynamics.report.figures.saturation import plot_curves, plot_scaling, plot_side_by_side
from lmdynamics.saturation import harness, scaling
from lmdynamics.saturation.analyze import InputError, Series, detect_all
from lmdynamics.saturation.detect import MARGIN, MIN_FRACTION
from lmdynamics.saturation.signals import SIGNALS


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
        if series.ingested:  # every ingested metric, for the other figure tools (lmdynamics report --table OUT)
            store.append(store.table_path(stage), series.frame[series.frame.component == harness.COMPONENT])
        text = report_text(results, series, figures, min_fraction, margin)
        if law is not None:
            figure = plot_scaling(series.rows, series.metric, law, gap_table, stage / "figures" / "scaling_law.png")
            gap_table.to_csv(stage / "scaling.csv", index=False)
            text += scaling_section(law, gap_table, large) + f"\n![scaling_law](figures/{figure.name})\n"
        (stage / "report.md").write_text(text, encoding="utf-8")
    return out / "report.md"
