"""One report across runs: ``python analysis/compare.py runs/a runs/b ... --out DIR [--group-by KEY]``.

Reads each run's tidy table (``metrics.parquet``), ``run.json`` and resolved ``config.yaml`` only, never model
files. A path that holds run directories (a sweep's root) stands for all of them. Draws, overlaid per run
and coloured by group: validation loss and excess loss (synthetic language) over tokens, final vs best
validation loss, the head's effective rank and KL-to-uniform over steps (each MoS component's head
averaged), and per layer the fraction of training after which CKA-to-final stays >= the threshold
(``lmdynamics.analysis.summaries.convergence_steps``; runs with convergence measured) with, per group, its mean
and a Student-t interval over the group's runs (seeds), the trend per doubling of a numeric group value (e.g.
the hidden size), CKA-to-final at fixed fractions of training and its curves per layer. Writes
``DIR/report.md``, ``DIR/runs.csv`` (the final numbers per run) and ``DIR/figures/*.png``, each atomically.

``--group-by`` takes any config key (dotted, e.g. ``model.model.hidden_size`` or ``model.model.head.kind``)
or a ``run.json`` field (``hidden_size``, ``synthetic.rank``); the default groups by model name.
Tables are read in parallel threads (Arrow releases the GIL), only the rows the report uses.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from . import store
from .catalogue import is_output_head

LOSS, VAL_LOSS, EXCESS = "train_loss", "val_loss", "excess_loss"
HEAD_ER, HEAD_KL, CKA_FINAL, SATURATION = "er", "kl_uniform", "cka_final", "saturation_event"
METRICS = (VAL_LOSS, EXCESS, HEAD_ER, HEAD_KL, CKA_FINAL, SATURATION)
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
    for source in (run.config, run.info):
        node = source
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                node = None
                break
            node = node[part]
        if node is not None:
            return node
    return None


def _series(table: pd.DataFrame, metric: str, component: str | None = "model") -> pd.DataFrame:
    rows = table[table["metric"] == metric]
    if component is not None:
        rows = rows[rows["component"] == component]
    return rows.sort_values("step")


def _head_series(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The head's metric per step: the plain or low-rank head, or the mean over a mixture's component heads."""
    rows = table[(table["metric"] == metric) & table["component"].map(is_output_head)]
    return rows.groupby("step", as_index=False)["value"].mean()


def summarize(run: Run, group_by: str | None) -> dict:
    """The final numbers of one run."""
    t = run.table
    val = _series(t, VAL_LOSS)
    excess = _series(t, EXCESS)
    er, kl = _head_series(t, HEAD_ER), _head_series(t, HEAD_KL)
    row = {"run": run.name, "model": run.info.get("model", ""),
           "group": str(lookup(run, group_by)) if group_by else run.info.get("model", ""),
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
CI_LEVEL = 0.95


def t_interval(values) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the Student-t interval at ``CI_LEVEL`` over independent runs (e.g. seeds):
    mean +- t_{(1+level)/2, n-1} s / sqrt(n), s the sample standard deviation; NaN values are left out, and the
    bounds are NaN for fewer than 2 values."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    n = len(v)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if n < 2:
        return mean, math.nan, math.nan, n
    half = float(stats.t.ppf((1 + CI_LEVEL) / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


def convergence_by_group(conv: pd.DataFrame, groups: dict[str, str]) -> pd.DataFrame:
    """Per group and layer: the runs' convergence fractions as mean and t-interval (``t_interval``)."""
    out = []
    for (group, layer), rows in conv.assign(group=conv["run"].map(groups)).groupby(["group", "layer"]):
        mean, low, high, n = t_interval(rows["fraction"])
        out.append({"group": group, "layer": int(layer), "runs": n, "mean": mean, "ci_low": low, "ci_high": high})
    return pd.DataFrame(out, columns=["group", "layer", "runs", "mean", "ci_low", "ci_high"])


def numeric_groups(groups: dict[str, str]) -> dict[str, float] | None:
    """The groups' values as positive numbers (e.g. hidden sizes), else None."""
    try:
        values = {run: float(g) for run, g in groups.items()}
    except ValueError:
        return None
    return values if all(v > 0 for v in values.values()) and len(set(values.values())) > 1 else None


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
        for group in sorted({groups[r] for r in per_run}, key=_natural):
            mean, low, high, n = t_interval([v for r, v in per_run.items() if groups[r] == group])
            out.append({"group": group, "fraction": point, "runs": n, "mean": mean, "ci_low": low, "ci_high": high})
    return pd.DataFrame(out, columns=["group", "fraction", "runs", "mean", "ci_low", "ci_high"])


# ------------------------------------------------------------------------------------------------ figures
def _colors(groups: list[str]) -> dict[str, tuple]:
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    order = sorted(set(groups), key=_natural)
    return {g: cmap(i / max(1, len(order) - 1)) for i, g in enumerate(order)}


def _natural(text: str) -> list:
    """Sort key that orders the numbers inside names by value (``d8`` before ``d16``)."""
    return [(0, float(p), "") if p.replace(".", "", 1).isdigit() else (1, 0.0, p) for p in re.split(r"(\d+(?:\.\d+)?)", text) if p]


def _curves(runs: list[Run], summary: pd.DataFrame, metric: str, ylabel: str, path: Path, head: bool = False,
            log_y: bool = False) -> Path | None:
    from matplotlib.figure import Figure

    from .analysis.plots import save

    groups = dict(zip(summary["run"], summary["group"]))
    colors = _colors(list(groups.values()))
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.add_subplot()
    drawn, labelled = False, set()
    for run in runs:
        rows = _head_series(run.table, metric) if head else _series(run.table, metric)
        if rows.empty:
            continue
        tps = run.info.get("tokens_per_step") or 1
        g = groups[run.name]
        ax.plot(rows["step"] * tps, rows["value"], color=colors[g], alpha=0.8, lw=1.2,
                label=None if g in labelled else g)
        labelled.add(g)
        drawn = True
    if not drawn:
        return None
    ax.set_xlabel("tokens")
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(title="group", fontsize=8, loc="best")
    fig.tight_layout()
    return save(fig, path)


def _final_vs_best(summary: pd.DataFrame, path: Path) -> Path | None:
    from matplotlib.figure import Figure

    from .analysis.plots import save

    s = summary.dropna(subset=["final_val_loss"]) if "final_val_loss" in summary else summary.iloc[0:0]
    if s.empty:
        return None
    colors = _colors(list(s["group"]))
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    for g, rows in s.groupby("group"):
        ax.scatter(rows["best_val_loss"], rows["final_val_loss"], color=colors[g], label=g, s=30)
    lo, hi = float(s[["best_val_loss", "final_val_loss"]].min().min()), float(s[["best_val_loss", "final_val_loss"]].max().max())
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--", label="final = best")
    ax.set_xlabel("best validation loss")
    ax.set_ylabel("final validation loss")
    ax.legend(fontsize=8, title="group")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def _convergence(conv: pd.DataFrame, summary: pd.DataFrame, path: Path) -> Path | None:
    from matplotlib.figure import Figure

    from .analysis.plots import save

    if conv.empty:
        return None
    conv = conv.merge(summary[["run", "group"]], on="run")
    stats = conv.groupby(["group", "layer"])["fraction"].agg(["mean", "std", "count"]).reset_index()
    colors = _colors(list(stats["group"]))
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for g, rows in stats.groupby("group"):
        ax.errorbar(rows["layer"], rows["mean"], yerr=rows["std"].fillna(0), color=colors[g], marker="o", capsize=3, label=f"{g} (n={int(rows['count'].max())})")
    ax.set_xlabel("layer")
    ax.set_ylabel("fraction of training until CKA-to-final stays >= threshold")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, title="group")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def _cka_curves_figure(curves: pd.DataFrame, summary: pd.DataFrame, threshold: float, path: Path) -> Path | None:
    """One panel per layer: CKA-to-final over the fraction of training, the mean over each group's runs as a line
    and the range of its runs (lowest to highest) shaded."""
    from .analysis.plots import save
    from .analysis.plots.common import panels

    if curves.empty:
        return None
    curves = curves.merge(summary[["run", "group"]], on="run")
    colors = _colors(list(curves["group"]))
    layers = sorted(curves["layer"].unique())
    fig, axes = panels(len(layers), width=4.2, height=3.2)
    for ax, layer in zip(axes, layers):
        for g in sorted(curves["group"].unique(), key=_natural):
            rows = curves[(curves["layer"] == layer) & (curves["group"] == g)]
            stats = rows.groupby("fraction")["value"].agg(["mean", "min", "max", "count"]).reset_index()
            ax.plot(stats["fraction"], stats["mean"], color=colors[g], lw=1.3, label=f"{g} (n={int(stats['count'].max())})")
            ax.fill_between(stats["fraction"], stats["min"], stats["max"], color=colors[g], alpha=0.2, lw=0)
        ax.axhline(threshold, color="grey", lw=0.8, ls="--")
        ax.set_title(f"layer {layer}")
        ax.set_xlabel("fraction of training")
        ax.set_ylabel("CKA to final")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, title="group", title_fontsize=7)
    return save(fig, path)


# ------------------------------------------------------------------------------------------------ report
def _markdown_table(frame: pd.DataFrame) -> str:
    def fmt(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        return "" if v is None else str(v)

    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    return head + "".join("| " + " | ".join(fmt(v) for v in row) + " |\n" for row in frame.itertuples(index=False))


def _interval(mean: float, low: float, high: float, n: int) -> str:
    if math.isnan(mean):
        return ""
    return f"{mean:.3f} (n=1)" if math.isnan(low) else f"{mean:.3f} [{low:.3f}, {high:.3f}] (n={n})"


def _convergence_sections(conv: pd.DataFrame, curves: pd.DataFrame, groups: dict[str, str], threshold: float,
                          group_by: str | None) -> list[str]:
    """The per-group convergence tables: fractions per layer with intervals, the trend with a numeric group value,
    and CKA-to-final at fixed fractions of training."""
    ci = f"{CI_LEVEL:.0%} Student-t interval over the group's runs"
    by_group = convergence_by_group(conv, groups)
    by_group["cell"] = [_interval(r.mean, r.ci_low, r.ci_high, r.runs) for r in by_group.itertuples()]
    table = by_group.pivot(index="group", columns="layer", values="cell")
    table = table.loc[sorted(table.index, key=_natural)]
    table.columns = [f"L{c}" for c in table.columns]
    lines = [f"## Convergence fraction per group and layer (CKA-to-final >= {threshold:g}; mean [{ci}])", "",
             _markdown_table(table.reset_index()), ""]
    values = numeric_groups(groups)
    if values is not None:
        trend = trend_per_doubling(conv, values)
        if not trend.empty:
            trend["slope per doubling"] = [_interval(r.slope_per_doubling, r.ci_low, r.ci_high, r.runs) for r in trend.itertuples()]
            lines += [f"## Trend: convergence fraction per doubling of `{group_by}`", "",
                      f"Least-squares slope of the fraction against log2 of the group value over all runs, with its "
                      f"{CI_LEVEL:.0%} t-interval; negative: larger values converge earlier.", "",
                      _markdown_table(trend[["layer", "slope per doubling"]]), ""]
    at = cka_at_fractions(curves, groups)
    if not at.empty:
        at["cell"] = [_interval(r.mean, r.ci_low, r.ci_high, r.runs) for r in at.itertuples()]
        pivot = at.pivot(index="group", columns="fraction", values="cell")
        pivot = pivot.loc[sorted(pivot.index, key=_natural)]
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
    return agg.iloc[sorted(range(len(agg)), key=lambda i: _natural(str(agg["group"].iloc[i])))]


def write_report(runs: list[Run], out: Path, group_by: str | None, threshold: float = 0.95) -> Path:
    from .atomic import write_text_atomic

    summary = pd.DataFrame([summarize(r, group_by) for r in runs])
    conv = convergence_fractions(runs, threshold)
    curves = cka_curves(runs)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    drawn = {
        "validation loss": _curves(runs, summary, VAL_LOSS, "validation loss (nats)", figures / "val_loss.png"),
        "excess loss (val_loss - entropy floor)": _curves(runs, summary, EXCESS, "excess loss (nats)", figures / "excess_loss.png", log_y=True),
        "final vs best validation loss": _final_vs_best(summary, figures / "final_vs_best.png"),
        "head effective rank": _curves(runs, summary, HEAD_ER, "head effective rank", figures / "head_er.png", head=True),
        "head KL-to-uniform of s / sum(s)": _curves(runs, summary, HEAD_KL, "KL to uniform (nats)", figures / "head_kl_uniform.png", head=True),
        f"convergence fraction per layer (CKA-to-final >= {threshold:g})": _convergence(conv, summary, figures / "convergence_fraction.png"),
        "CKA-to-final over training per layer (line: mean of the group's runs; band: their range)":
            _cka_curves_figure(curves, summary, threshold, figures / "cka_final_curves.png"),
    }
    with_csv = summary.copy()
    write_text_atomic(out / "runs.csv", with_csv.to_csv(index=False))
    lines = [f"# Comparison of {len(runs)} runs", "",
             f"Grouped by `{group_by or 'model'}`. " + ("Excess loss = validation loss minus the synthetic language's "
             "exact entropy floor (nats). " if summary["entropy_floor"].notna().any() else "")
             + f"A late rise: final validation loss more than {RISE_MARGIN} nats above its best. "
             "Saturation events: the live monitor's (head_rank) events.", ""]
    lines += ["## Per group (mean, standard deviation over runs)", "", _markdown_table(group_stats(summary)), ""]
    lines += ["## Final numbers per run", "", _markdown_table(summary.drop(columns=["hidden_size"], errors="ignore")), ""]
    if not conv.empty:
        pivot = conv.pivot(index="run", columns="layer", values="fraction")
        pivot.columns = [f"L{c}" for c in pivot.columns]
        lines += ["## Convergence fraction per layer", "", _markdown_table(pivot.reset_index()), ""]
        lines += _convergence_sections(conv, curves, dict(zip(summary["run"], summary["group"])), threshold, group_by)
    lines += ["## Figures", ""]
    for title, path in drawn.items():
        lines += [f"### {title}", "", f"![{title}](figures/{path.name})" if path else "(no run has these values)", ""]
    return write_text_atomic(out / "report.md", "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="analysis/compare.py", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("runs", nargs="+", help="run directories, or directories holding run directories (a sweep root)")
    parser.add_argument("--out", required=True, help="output directory for report.md, runs.csv and figures/")
    parser.add_argument("--group-by", default=None, help="a dotted config key or run.json field to group runs by")
    parser.add_argument("--threshold", type=float, default=0.95, help="CKA-to-final convergence threshold")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(find_runs(args.runs))
        if args.group_by:
            missing = [r.name for r in runs if lookup(r, args.group_by) is None]
            if missing:
                raise CompareError(f"--group-by {args.group_by}: not in the config or run.json of {', '.join(missing[:3])}"
                                   f"{' and others' if len(missing) > 3 else ''}; give a dotted config key such as model.model.hidden_size")
        report = write_report(runs, Path(args.out), args.group_by, args.threshold)
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"[compare] {len(runs)} runs: {report}")
    return 0
