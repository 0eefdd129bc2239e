"""One report across runs: ``lmdynamics compare runs/a runs/b ... --out DIR [--group_by K1,K2] [--baseline KEY=VALUE]``.

Reads each run's tidy table (``metrics.parquet``), ``run.json`` and resolved ``config.yaml`` only, never model
files. A path that holds run directories (a sweep's root) stands for all of them. Runs of any size, corpus,
schedule and set of measurements compare; a section without data for any run says so in one line.

Groups (``lmdynamics.compare.grouping``): ``--group_by`` takes one or more comma-separated config keys (a unique tail
such as ``head.kind`` will do) or run.json fields; without it, the config keys that differ between the runs,
seeds excepted. Labels are short (``d=8 · head=mos K=4``); each group has its own colour and line style, the
same in every figure, with the legend outside the data.

The report leads with the verdict (``lmdynamics.compare.verdict``): with ``--baseline KEY=VALUE``, per other group
the difference in final and best validation loss (and excess loss on the synthetic language) to the baseline
group at the same remaining keys, paired by seed where seeds match, with its 95% t-interval, n and a word
(better / worse / no significant difference); without a baseline, the group means with intervals. Then the
per-group and per-run numbers, and figures overlaid per run: validation and excess loss over tokens, final vs
best validation loss, the head's effective rank and KL-to-uniform (a mixture's component heads averaged),
and per layer the fraction of training after which CKA-to-final stays >= the threshold
(``lmdynamics.summaries.convergence_steps``) with per-group intervals, the trend per doubling of a
single numeric grouping key, CKA-to-final at fixed fractions of training and its curves per layer.

Writes ``DIR/report.md``, ``DIR/runs.csv`` (the final numbers per run), ``DIR/verdict.csv`` and
``DIR/figures/*.png``, all built in a hidden staging folder and moved into place at the end: bad input or a
failure leaves nothing half-written. Tables are read in parallel threads (Arrow releases the GIL), only the
rows the report uses.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from lmdynamics import catalogue
from lmdynamics.compare import grouping
from lmdynamics.compare.grouping import natural
from lmdynamics.compare.groups import Grouping, plan_groups
from lmdynamics.compare.runs import RISE_MARGIN, Run, cka_curves, convergence_fractions, curve_title, summarize
from lmdynamics.compare.statistics import cka_at_fractions, convergence_by_group, group_stats, numeric_groups, trend_per_doubling
from lmdynamics.compare.verdict import CI_LEVEL, means_table, verdict_table
from lmdynamics.report.figures import compare as F

def _markdown_table(frame: pd.DataFrame) -> str:
    def fmt(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        return "" if v is None else str(v)

    head = "| " + " | ".join(map(str, frame.columns)) + " |\n|" + "---|" * len(frame.columns) + "\n"
    return head + "".join("| " + " | ".join(fmt(v) for v in row) + " |\n" for row in frame.itertuples(index=False))


def _interval(mean: float, low: float, high: float, n) -> str:
    if math.isnan(mean):
        return ""
    return f"{mean:.3f} (n={n})" if math.isnan(low) else f"{mean:.3f} [{low:.3f}, {high:.3f}] (n={n})"


def _signed_interval(diff: float, low: float, high: float) -> str:
    if math.isnan(diff):
        return ""
    return f"{diff:+.4f}" if math.isnan(low) else f"{diff:+.4f} [{low:+.4f}, {high:+.4f}]"


def _convergence_sections(conv: pd.DataFrame, curves: pd.DataFrame, groups: dict[str, str], threshold: float,
                          numeric: dict[str, float] | None, key: str | None) -> list[str]:
    """The per-group convergence tables: fractions per layer with intervals, the trend with a numeric group value,
    and CKA-to-final at fixed fractions of training."""
    ci = f"{CI_LEVEL:.0%} Student-t interval over the group's runs"
    by_group = convergence_by_group(conv, groups)
    by_group["cell"] = [_interval(r.mean, r.ci_low, r.ci_high, r.runs) for r in by_group.itertuples()]
    table = by_group.pivot(index="group", columns="layer", values="cell")
    table = table.loc[sorted(table.index, key=natural)]
    table.columns = [f"L{c}" for c in table.columns]
    lines = [f"## Convergence fraction per group and layer (CKA-to-final >= {threshold:g}; mean [{ci}])", "",
             _markdown_table(table.reset_index()), ""]
    if numeric is not None:
        trend = trend_per_doubling(conv, numeric)
        if not trend.empty:
            trend["slope per doubling"] = [_interval(r.slope_per_doubling, r.ci_low, r.ci_high, r.runs) for r in trend.itertuples()]
            lines += [f"## Trend: convergence fraction per doubling of `{key}`", "",
                      f"Least-squares slope of the fraction against log2 of the group value over all runs, with its "
                      f"{CI_LEVEL:.0%} t-interval; negative: larger values converge earlier.", "",
                      _markdown_table(trend[["layer", "slope per doubling"]]), ""]
    at = cka_at_fractions(curves, groups)
    if not at.empty:
        at["cell"] = [_interval(r.mean, r.ci_low, r.ci_high, r.runs) for r in at.itertuples()]
        pivot = at.pivot(index="group", columns="fraction", values="cell")
        pivot = pivot.loc[sorted(pivot.index, key=natural)]
        pivot.columns = [f"{c:.0%}" for c in pivot.columns]
        lines += [f"## CKA-to-final at fractions of training (mean over layers; mean [{ci}])", "",
                  _markdown_table(pivot.reset_index()), ""]
    return lines


def _lead(summary: pd.DataFrame, plan: Grouping) -> tuple[list[str], pd.DataFrame]:
    """The report's first section (verdict with a baseline, else group means) and its table for ``verdict.csv``."""
    if plan.baseline is not None:
        key, value = plan.baseline
        table = verdict_table(summary, plan.groups, plan.keys, key, value)
        shown = table.assign(**{"difference [95% CI]": [_signed_interval(r.difference, r.ci_low, r.ci_high) for r in table.itertuples()]})
        lines = [f"## Verdict: each group against the baseline `{key}={value}`", "",
                 "Difference = group - baseline at the same remaining grouping keys (negative: lower loss, better); "
                 f"{CI_LEVEL:.0%} interval paired by seed where at least two seeds match, else Welch's "
                 "(`lmdynamics.compare.verdict`).", ""]
        if table.empty:
            lines += ["No group other than the baseline.", ""]
        else:
            lines += [_markdown_table(shown[["group", "baseline", "metric", "difference [95% CI]", "n", "pairing", "verdict"]]), ""]
        return lines, table
    table = means_table(summary)
    shown = table.assign(**{"mean [95% CI]": [_interval(r.mean, r.ci_low, r.ci_high, r.n) for r in table.itertuples()]})
    lines = [f"## Group means ({CI_LEVEL:.0%} Student-t interval over the group's runs; give --baseline KEY=VALUE for a verdict)", ""]
    lines += [_markdown_table(shown[["group", "metric", "mean [95% CI]"]]) if not table.empty else "No run has validation losses.", ""]
    return lines, table


def write_report(runs: list[Run], out: Path, group_by: list[str] | str | None = None, threshold: float = 0.95,
                 baseline: str | None = None) -> Path:
    """Group, compute, draw and write the report into ``out`` (staged, then moved into place); returns report.md."""
    from lmdynamics.atomic import staged_dir

    if isinstance(group_by, str):
        group_by = [k.strip() for k in group_by.split(",") if k.strip()]
    plan = plan_groups(runs, group_by, baseline)
    summary = pd.DataFrame([summarize(r) for r in runs])
    summary.insert(1, "group", summary["run"].map(plan.of_run))
    for key in plan.keys:
        summary[key] = [plan.groups[plan.of_run[r.name]].value(key) for r in runs]
    groups = dict(zip(summary["run"], summary["group"]))
    style = grouping.styles(summary["group"])
    conv = convergence_fractions(runs, threshold)
    curves = cka_curves(runs)
    lead, lead_table = _lead(summary, plan)
    with staged_dir(out) as stage:
        figures = stage / "figures"
        figures.mkdir()
        drawn = {curve_title(m): F.curves(runs, summary, style, m, figures / f"{m.compare + '_' if m.compare != 'model' else ''}{m.name}.png")
                 for m in catalogue.compared()}
        drawn["final vs best validation loss"] = F.final_vs_best(summary, style, figures / "final_vs_best.png")
        drawn[f"convergence fraction per layer (CKA-to-final >= {threshold:g})"] = F.convergence(conv, summary, style, figures / "convergence_fraction.png")
        drawn["CKA-to-final over training per layer (line: mean of the group's runs; band: their range)"] = \
            F.cka_curves(curves, summary, style, threshold, figures / "cka_final_curves.png")
        summary.to_csv(stage / "runs.csv", index=False)
        lead_table.to_csv(stage / "verdict.csv", index=False)
        keys = ", ".join(f"`{k}`" for k in plan.keys) or "nothing (the runs' configs differ only in seeds)"
        lines = [f"# Comparison of {len(runs)} runs in {len(plan.groups)} groups", "",
                 f"Grouped by {keys}. " + ("Excess loss = validation loss minus the synthetic language's exact "
                 "entropy floor (nats). " if summary["entropy_floor"].notna().any() else "")
                 + f"A late rise: final validation loss more than {RISE_MARGIN} nats above its best. "
                 "Saturation events: the live monitor's (head_rank) events.", ""]
        lines += lead
        lines += ["## Per group (mean, standard deviation over runs)", "", _markdown_table(group_stats(summary)), ""]
        per_run = summary.drop(columns=["hidden_size", *plan.keys], errors="ignore")
        lines += ["## Final numbers per run", "", _markdown_table(per_run), ""]
        if conv.empty:
            lines += ["## Convergence fraction per layer", "", "No run has CKA-to-final measurements (convergence.enabled).", ""]
        else:
            pivot = conv.pivot(index="run", columns="layer", values="fraction")
            pivot.columns = [f"L{c}" for c in pivot.columns]
            lines += ["## Convergence fraction per layer", "", _markdown_table(pivot.reset_index()), ""]
            numeric = numeric_groups({r: v for r, v in zip(summary["run"], summary[plan.keys[0]])}) if len(plan.keys) == 1 else None
            lines += _convergence_sections(conv, curves, groups, threshold, numeric, plan.keys[0] if plan.keys else None)
        lines += ["## Figures", ""]
        for title, path in drawn.items():
            lines += [f"### {title}", "", f"![{title}](figures/{path.name})" if path else "No run has these values.", ""]
        (stage / "report.md").write_text("\n".join(lines), encoding="utf-8")
    return out / "report.md"
