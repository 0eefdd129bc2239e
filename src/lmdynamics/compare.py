"""One report across runs: ``python analysis/compare.py runs/a runs/b ... --out DIR [--group-by K1,K2] [--baseline KEY=VALUE]``.

Reads each run's tidy table (``metrics.parquet``), ``run.json`` and resolved ``config.yaml`` only, never model
files. A path that holds run directories (a sweep's root) stands for all of them. Runs of any size, corpus,
schedule and set of measurements compare; a section without data for any run says so in one line.

Groups (``lmdynamics.grouping``): ``--group-by`` takes one or more comma-separated config keys (a unique tail
such as ``head.kind`` will do) or run.json fields; without it, the config keys that differ between the runs,
seeds excepted. Labels are short (``d=8 · head=mos K=4``); each group has its own colour and line style, the
same in every figure, with the legend outside the data.

The report leads with the verdict (``lmdynamics.verdict``): with ``--baseline KEY=VALUE``, per other group
the difference in final and best validation loss (and excess loss on the synthetic language) to the baseline
group at the same remaining keys, paired by seed where seeds match, with its 95% t-interval, n and a word
(better / worse / no significant difference); without a baseline, the group means with intervals. Then the
per-group and per-run numbers, and figures overlaid per run: validation and excess loss over tokens, final vs
best validation loss, the head's effective rank and KL-to-uniform (a mixture's component heads averaged),
and per layer the fraction of training after which CKA-to-final stays >= the threshold
(``lmdynamics.analysis.summaries.convergence_steps``) with per-group intervals, the trend per doubling of a
single numeric grouping key, CKA-to-final at fixed fractions of training and its curves per layer.

Writes ``DIR/report.md``, ``DIR/runs.csv`` (the final numbers per run), ``DIR/verdict.csv`` and
``DIR/figures/*.png``, all built in a hidden staging folder and moved into place at the end: bad input or a
failure leaves nothing half-written. Tables are read in parallel threads (Arrow releases the GIL), only the
rows the report uses.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from . import grouping, store
from .catalogue import head_series
from .grouping import natural
from .verdict import CI_LEVEL, means_table, t_interval, verdict_table

LOSS, VAL_LOSS, EXCESS = "train_loss", "val_loss", "excess_loss"
HEAD_ER, HEAD_KL, CKA_FINAL, SATURATION = "er", "kl_uniform", "cka_final", "saturation_event"
METRICS = (VAL_LOSS, EXCESS, HEAD_ER, HEAD_KL, CKA_FINAL, SATURATION)
#: The curves drawn over tokens, one figure each: (metric, figure title, y label, a head metric, log y axis).
CURVES = (
    (VAL_LOSS, "validation loss", "validation loss (nats)", False, False),
    (EXCESS, "excess loss (val_loss - entropy floor)", "excess loss (nats)", False, True),
    (HEAD_ER, "head effective rank", "head effective rank", True, False),
    (HEAD_KL, "head KL-to-uniform of s / sum(s)", "KL to uniform (nats)", True, False),
)
RISE_MARGIN = 0.02  # nats: final validation loss this far above its best counts as a late rise


class CompareError(ValueError):
    """Input the comparison cannot use: one line for people."""


@dataclass
class Run:
    name: str
    path: Path
    info: dict
    config: dict
    table: pd.DataFrame


def find_runs(paths: list[str]) -> list[Path]:
    """Run directories: each path that holds ``metrics.parquet``, or the run directories directly inside it."""
    found = []
    for p in map(Path, paths):
        if store.table_path(p).is_dir():
            found.append(p)
        elif p.is_dir() and (subs := sorted(d for d in p.iterdir() if store.table_path(d).is_dir())):
            found += subs
        else:
            raise CompareError(f"{p} is neither a run directory (with metrics.parquet/) nor a directory of runs")
    if len(set(found)) != len(found):
        raise CompareError("a run is given twice; list each run (or sweep root) once")
    return found


def _read_table(path: Path) -> pd.DataFrame:
    """The rows the report needs from one run's table (``store.read_table`` of those metrics only)."""
    return store.read_table(store.table_path(path), metrics=METRICS)


def _load(path: Path) -> Run:
    info_file, config_file = path / "run.json", path / "config.yaml"
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    config = yaml.load(config_file.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if config_file.is_file() else {}
    return Run(info.get("run", path.name), path, info, config or {}, _read_table(path))


def load_runs(paths: list[Path], threads: int = 8) -> list[Run]:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(_load, paths))


def lookup(run: Run, key: str):
    """A dotted key from the run's resolved config, else from run.json (None when neither has it)."""
    return grouping.lookup(run.config, run.info, key)


def _series(table: pd.DataFrame, metric: str, component: str | None = "model") -> pd.DataFrame:
    rows = table[table["metric"] == metric]
    if component is not None:
        rows = rows[rows["component"] == component]
    return rows.sort_values("step")


def summarize(run: Run) -> dict:
    """The final numbers of one run."""
    t = run.table
    val = _series(t, VAL_LOSS)
    excess = _series(t, EXCESS)
    er, kl = head_series(t, HEAD_ER), head_series(t, HEAD_KL)
    seed = lookup(run, "seed_everything")
    row = {"run": run.name, "model": run.info.get("model", ""), "seed": seed if seed is not None else run.info.get("seed"),
           "hidden_size": run.info.get("hidden_size"), "parameters": run.info.get("parameters"),
           "steps": int(t["step"].max()) if len(t) else 0}
    if len(val):
        best = val.loc[val["value"].idxmin()]
        row.update(final_val_loss=float(val["value"].iloc[-1]), best_val_loss=float(best["value"]), best_step=int(best["step"]),
                   late_rise=bool(val["value"].iloc[-1] > best["value"] + RISE_MARGIN))
    floor = (run.info.get("synthetic") or {}).get("entropy_floor")
    row["entropy_floor"] = floor
    if len(excess):
        row.update(final_excess_loss=float(excess["value"].iloc[-1]), best_excess_loss=float(excess["value"].min()))
    if len(er):
        row["final_head_er"] = float(er["value"].iloc[-1])
    if len(kl):
        row["final_head_kl_uniform"] = float(kl["value"].iloc[-1])
    row["saturation_events"] = int((t["metric"] == SATURATION).sum())
    return row


def _layer_cka(table: pd.DataFrame) -> pd.DataFrame:
    """CKA-to-final rows of the layers' whole components (the per-head ``ov_head*`` rows left out)."""
    rows = table[(table["metric"] == CKA_FINAL) & (table["layer"] >= 0)]
    return rows[~rows["component"].str.startswith("ov_head")]


def convergence_fractions(runs: list[Run], threshold: float) -> pd.DataFrame:
    """Per run and layer, the fraction of training after which CKA-to-final stays >= threshold (mean over components)."""
    from .analysis.summaries import convergence_steps

    out = []
    for run in runs:
        rows = _layer_cka(run.table)
        if rows.empty:
            continue
        steps = convergence_steps(rows, threshold=threshold, total_steps=run.info.get("max_steps"))
        for layer, g in steps.groupby("layer"):
            out.append({"run": run.name, "layer": int(layer), "fraction": float(g["fraction"].mean())})
    return pd.DataFrame(out, columns=["run", "layer", "fraction"])


def cka_curves(runs: list[Run]) -> pd.DataFrame:
    """Per run, layer and measured step: CKA-to-final (mean over the layer's components) and the step's fraction of
    training (step / max_steps, else over the run's last measured step)."""
    out = []
    for run in runs:
        rows = _layer_cka(run.table)
        if rows.empty:
            continue
        total = run.info.get("max_steps") or int(rows["step"].max())
        mean = rows.groupby(["layer", "step"], as_index=False)["value"].mean()
        out.append(mean.assign(run=run.name, fraction=mean["step"] / total))
    cols = ["run", "layer", "step", "fraction", "value"]
    return pd.concat(out, ignore_index=True)[cols] if out else pd.DataFrame(columns=cols)


# ------------------------------------------------------------------------------------------------ statistics
def convergence_by_group(conv: pd.DataFrame, groups: dict[str, str]) -> pd.DataFrame:
    """Per group and layer: the runs' convergence fractions as mean and t-interval (``t_interval``)."""
    out = []
    for (group, layer), rows in conv.assign(group=conv["run"].map(groups)).groupby(["group", "layer"]):
        mean, low, high, n = t_interval(rows["fraction"])
        out.append({"group": group, "layer": int(layer), "runs": n, "mean": mean, "ci_low": low, "ci_high": high})
    return pd.DataFrame(out, columns=["group", "layer", "runs", "mean", "ci_low", "ci_high"])


def numeric_groups(values: dict[str, object]) -> dict[str, float] | None:
    """Per run, its value of the one grouping key as a positive number (e.g. the hidden size), else None."""
    try:
        numbers = {run: float(v) for run, v in values.items()}
    except (TypeError, ValueError):
        return None
    return numbers if all(v > 0 for v in numbers.values()) and len(set(numbers.values())) > 1 else None


def trend_per_doubling(conv: pd.DataFrame, values: dict[str, float]) -> pd.DataFrame:
    """Per layer: the least-squares slope of the convergence fraction against log2 of the group value over all runs
    (the change in fraction per doubling, e.g. of the hidden size) with its t-interval at ``CI_LEVEL``:
    slope +- t_{(1+level)/2, n-2} sqrt(SSR / (n - 2) / Sxx) (ordinary least squares; each run one observation).
    A negative slope: the larger groups converge earlier."""
    from scipy import stats

    out = []
    for layer, rows in conv.dropna(subset=["fraction"]).groupby("layer"):
        x, y = np.log2(rows["run"].map(values).to_numpy(float)), rows["fraction"].to_numpy(float)
        n, sxx = len(x), float(((x - x.mean()) ** 2).sum())
        if n < 3 or sxx == 0:
            continue
        slope = float(((x - x.mean()) * (y - y.mean())).sum() / sxx)
        residual = y - y.mean() - slope * (x - x.mean())
        half = float(stats.t.ppf((1 + CI_LEVEL) / 2, n - 2) * math.sqrt((residual ** 2).sum() / (n - 2) / sxx))
        out.append({"layer": int(layer), "runs": n, "slope_per_doubling": slope, "ci_low": slope - half, "ci_high": slope + half})
    return pd.DataFrame(out, columns=["layer", "runs", "slope_per_doubling", "ci_low", "ci_high"])


def cka_at_fractions(curves: pd.DataFrame, groups: dict[str, str], points=(0.1, 0.25, 0.5, 0.75, 0.9)) -> pd.DataFrame:
    """Per group and fraction of training: CKA-to-final averaged over layers at each run's measurement nearest that
    fraction, as mean and t-interval over the group's runs."""
    out = []
    for point in points:
        per_run = {}
        for run, rows in curves.groupby("run"):
            fractions = np.sort(rows["fraction"].unique())
            nearest = fractions[np.argmin(np.abs(fractions - point))]
            per_run[run] = float(rows.loc[rows["fraction"] == nearest, "value"].mean())
        for group in sorted({groups[r] for r in per_run}, key=natural):
            mean, low, high, n = t_interval([v for r, v in per_run.items() if groups[r] == group])
            out.append({"group": group, "fraction": point, "runs": n, "mean": mean, "ci_low": low, "ci_high": high})
    return pd.DataFrame(out, columns=["group", "fraction", "runs", "mean", "ci_low", "ci_high"])


# ------------------------------------------------------------------------------------------------ figures
def _save_figure(fig, path: Path) -> Path:
    from .analysis.plots import save

    return save(fig, path)


def _legend_outside(fig, title: str = "group") -> None:
    """One legend for the figure, right of the axes (constrained layout makes room for it)."""
    handles, labels = [], []
    for ax in fig.axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, title=title, fontsize=8, title_fontsize=8, loc="outside right upper")


def _figure(width: float = 8.0, height: float = 4.5):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _curves(runs: list[Run], summary: pd.DataFrame, style: dict, metric: str, ylabel: str, path: Path,
            head: bool = False, log_y: bool = False) -> Path | None:
    groups = dict(zip(summary["run"], summary["group"]))
    fig, ax = _figure()
    labelled = set()
    for run in runs:
        rows = head_series(run.table, metric) if head else _series(run.table, metric)
        if rows.empty:
            continue
        tps = run.info.get("tokens_per_step") or 1
        g = groups[run.name]
        ax.plot(rows["step"] * tps, rows["value"], color=style[g]["color"], ls=style[g]["ls"], alpha=0.85, lw=1.3,
                label=None if g in labelled else g)
        labelled.add(g)
    if not labelled:
        return None
    ax.set_xlabel("tokens")
    ax.set_ylabel(ylabel)
    if log_y and all((line.get_ydata() > 0).all() for line in ax.get_lines()):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    _legend_outside(fig)
    return _save_figure(fig, path)


def _final_vs_best(summary: pd.DataFrame, style: dict, path: Path) -> Path | None:
    s = summary.dropna(subset=["final_val_loss"]) if "final_val_loss" in summary else summary.iloc[0:0]
    if s.empty:
        return None
    fig, ax = _figure(7.5, 5)
    for g in sorted(s["group"].unique(), key=natural):
        rows = s[s["group"] == g]
        ax.scatter(rows["best_val_loss"], rows["final_val_loss"], color=style[g]["color"], marker=style[g]["marker"], label=g, s=36)
    lo, hi = float(s[["best_val_loss", "final_val_loss"]].min().min()), float(s[["best_val_loss", "final_val_loss"]].max().max())
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--", label="final = best")
    ax.set_xlabel("best validation loss")
    ax.set_ylabel("final validation loss")
    ax.grid(alpha=0.3)
    _legend_outside(fig)
    return _save_figure(fig, path)


def _convergence(conv: pd.DataFrame, summary: pd.DataFrame, style: dict, path: Path) -> Path | None:
    if conv.empty:
        return None
    conv = conv.merge(summary[["run", "group"]], on="run")
    stats = conv.groupby(["group", "layer"])["fraction"].agg(["mean", "std", "count"]).reset_index()
    fig, ax = _figure(8, 4.5)
    for g in sorted(stats["group"].unique(), key=natural):
        rows = stats[stats["group"] == g]
        ax.errorbar(rows["layer"], rows["mean"], yerr=rows["std"].fillna(0), color=style[g]["color"], ls=style[g]["ls"],
                    marker=style[g]["marker"], capsize=3, label=f"{g} (n={int(rows['count'].max())})")
    ax.set_xlabel("layer")
    ax.set_ylabel("fraction of training until CKA-to-final stays >= threshold")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    _legend_outside(fig)
    return _save_figure(fig, path)


def _cka_curves_figure(curves: pd.DataFrame, summary: pd.DataFrame, style: dict, threshold: float, path: Path) -> Path | None:
    """One panel per layer: CKA-to-final over the fraction of training, the mean over each group's runs as a line
    and the range of its runs (lowest to highest) shaded; a group without the layer (a shallower model) is absent
    from that panel."""
    from .analysis.plots.common import panels

    if curves.empty:
        return None
    curves = curves.merge(summary[["run", "group"]], on="run")
    layers = sorted(curves["layer"].unique())
    fig, axes = panels(len(layers), width=4.2, height=3.2, extra=2.5)
    for ax, layer in zip(axes, layers):
        for g in sorted(curves["group"].unique(), key=natural):
            rows = curves[(curves["layer"] == layer) & (curves["group"] == g)]
            if rows.empty:
                continue
            stats = rows.groupby("fraction")["value"].agg(["mean", "min", "max", "count"]).reset_index()
            ax.plot(stats["fraction"], stats["mean"], color=style[g]["color"], ls=style[g]["ls"], lw=1.3,
                    label=f"{g} (n={rows['run'].nunique()})")
            ax.fill_between(stats["fraction"], stats["min"], stats["max"], color=style[g]["color"], alpha=0.15, lw=0)
        ax.axhline(threshold, color="grey", lw=0.8, ls="--")
        ax.set_title(f"layer {layer}")
        ax.set_xlabel("fraction of training")
        ax.set_ylabel("CKA to final")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    _legend_outside(fig)
    return _save_figure(fig, path)


# ------------------------------------------------------------------------------------------------ report
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


def group_stats(summary: pd.DataFrame) -> pd.DataFrame:
    """Per group: runs, and mean / standard deviation of the final numbers."""
    cols = [c for c in ("final_val_loss", "best_val_loss", "final_excess_loss", "final_head_er", "final_head_kl_uniform") if c in summary]
    agg = summary.groupby("group")[cols].agg(["mean", "std"])
    agg.columns = [f"{c}_{s}" for c, s in agg.columns]
    agg.insert(0, "runs", summary.groupby("group").size())
    agg = agg.reset_index()
    return agg.iloc[sorted(range(len(agg)), key=lambda i: natural(str(agg["group"].iloc[i])))]


@dataclass
class Grouping:
    """The grouping keys (full dotted keys), each run's group and the optional baseline (key, value)."""

    keys: list[str]
    groups: dict[str, grouping.Group]  # label -> group
    of_run: dict[str, str]  # run name -> label
    baseline: tuple[str, str] | None = None


def plan_groups(runs: list[Run], group_by: list[str] | None, baseline: str | None) -> Grouping:
    """The groups of the runs; bad keys or a baseline value no run has raise ``CompareError`` (one line)."""
    configs, infos = [r.config for r in runs], [r.info for r in runs]
    try:
        keys = [grouping.resolve(k, configs, infos, "--group-by") for k in group_by] if group_by else grouping.differing_keys(configs)
        base = None
        if baseline is not None:
            key, sep, value = baseline.partition("=")
            if not sep or not key or not value:
                raise CompareError(f"--baseline {baseline!r}: give KEY=VALUE, e.g. model.model.head.kind=plain")
            key = grouping.resolve(key.strip(), configs, infos, "--baseline")
            if key not in keys:
                keys.append(key)
            base = (key, value.strip())
        keys = grouping.with_kind_parameters(keys)
        for key in keys:
            if any(isinstance(lookup(r, key), dict) for r in runs):
                inside = [k for k in grouping.differing_keys(configs) if k.startswith(key + ".")]
                raise CompareError(f"--group-by {key}: a config section, not a value; the keys in it that differ between "
                                   f"the runs: {', '.join(inside) or '(none)'}")
    except grouping.GroupKeyError as err:
        raise CompareError(str(err)) from None
    for key in keys if group_by else []:  # the default keys may be absent from some runs (a run without config)
        missing = [r.name for r in runs if lookup(r, key) is None and not _head_parameter(key)]
        if missing:
            raise CompareError(f"--group-by {key}: not in the config or run.json of {', '.join(missing[:3])}"
                               f"{' and others' if len(missing) > 3 else ''}; group by keys every run has")
    of_run, groups = {}, {}
    for r in runs:
        g = grouping.group_of(r.config, r.info, keys)
        if keys and all(v is None for _, v in g.values):  # none of the keys: the run is a group of its own
            g = grouping.Group(g.values, r.name)
        of_run[r.name] = g.label
        groups[g.label] = g
    if base is not None and not any(g.value(base[0]) == base[1] for g in groups.values()):
        have = sorted({str(g.value(base[0])) for g in groups.values()}, key=natural)
        raise CompareError(f"--baseline {base[0]}={base[1]}: no run has this value; values of {base[0]}: {', '.join(have)}")
    return Grouping(keys, groups, of_run, base)


def _head_parameter(key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    return leaf in grouping.HEAD_PARAMETERS and parent.endswith("head")


def _lead(summary: pd.DataFrame, plan: Grouping) -> tuple[list[str], pd.DataFrame]:
    """The report's first section (verdict with a baseline, else group means) and its table for ``verdict.csv``."""
    if plan.baseline is not None:
        key, value = plan.baseline
        table = verdict_table(summary, plan.groups, plan.keys, key, value)
        shown = table.assign(**{"difference [95% CI]": [_signed_interval(r.difference, r.ci_low, r.ci_high) for r in table.itertuples()]})
        lines = [f"## Verdict: each group against the baseline `{key}={value}`", "",
                 "Difference = group - baseline at the same remaining grouping keys (negative: lower loss, better); "
                 f"{CI_LEVEL:.0%} interval paired by seed where at least two seeds match, else Welch's "
                 "(`lmdynamics.verdict`).", ""]
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
    from .atomic import staged_dir

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
        drawn = {title: _curves(runs, summary, style, metric, ylabel, figures / f"{'head_' if head else ''}{metric}.png", head, log_y)
                 for metric, title, ylabel, head, log_y in CURVES}
        drawn["final vs best validation loss"] = _final_vs_best(summary, style, figures / "final_vs_best.png")
        drawn[f"convergence fraction per layer (CKA-to-final >= {threshold:g})"] = _convergence(conv, summary, style, figures / "convergence_fraction.png")
        drawn["CKA-to-final over training per layer (line: mean of the group's runs; band: their range)"] = \
            _cka_curves_figure(curves, summary, style, threshold, figures / "cka_final_curves.png")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="analysis/compare.py", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("runs", nargs="+", help="run directories, or directories holding run directories (a sweep root)")
    parser.add_argument("--out", required=True, help="output directory for report.md, runs.csv, verdict.csv and figures/")
    parser.add_argument("--group-by", default=None,
                        help="comma-separated config keys or run.json fields (a unique tail such as head.kind will do); "
                             "default: the config keys that differ between the runs, seeds excepted")
    parser.add_argument("--baseline", default=None, help="KEY=VALUE of the baseline group (e.g. head.kind=plain): the verdict table")
    parser.add_argument("--threshold", type=float, default=0.95, help="CKA-to-final convergence threshold")
    args = parser.parse_args(argv)
    group_by = [k.strip() for k in args.group_by.split(",") if k.strip()] if args.group_by else None
    try:
        runs = load_runs(find_runs(args.runs))
        report = write_report(runs, Path(args.out), group_by, args.threshold, args.baseline)
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"[compare] {len(runs)} runs: {report}")
    return 0
