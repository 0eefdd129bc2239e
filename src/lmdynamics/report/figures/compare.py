"""The comparison's figures: curves over tokens overlaid per run, final vs best validation loss, convergence
fraction per layer and CKA-to-final curves per layer, one colour and line style per group (``grouping.styles``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lmdynamics.compare.grouping import natural
from lmdynamics.catalogue import Measurement
from lmdynamics.compare.runs import Run, curve_series
from lmdynamics.report.figures.common import panels, save


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


def figure(width: float = 8.0, height: float = 4.5):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def curves(runs: list[Run], summary: pd.DataFrame, style: dict, measurement: Measurement, path: Path) -> Path | None:
    """A compared measurement (``catalogue.compared``) over tokens, one line per run in its group's style."""
    groups = dict(zip(summary["run"], summary["group"]))
    fig, ax = figure()
    labelled = set()
    for run in runs:
        rows = curve_series(run.table, measurement)
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
    ax.set_ylabel(measurement.axis_label())
    if measurement.log_axis and all((line.get_ydata() > 0).all() for line in ax.get_lines()):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    _legend_outside(fig)
    return save(fig, path)


def final_vs_best(summary: pd.DataFrame, style: dict, path: Path) -> Path | None:
    s = summary.dropna(subset=["final_val_loss"]) if "final_val_loss" in summary else summary.iloc[0:0]
    if s.empty:
        return None
    fig, ax = figure(7.5, 5)
    for g in sorted(s["group"].unique(), key=natural):
        rows = s[s["group"] == g]
        ax.scatter(rows["best_val_loss"], rows["final_val_loss"], color=style[g]["color"], marker=style[g]["marker"], label=g, s=36)
    lo, hi = float(s[["best_val_loss", "final_val_loss"]].min().min()), float(s[["best_val_loss", "final_val_loss"]].max().max())
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--", label="final = best")
    ax.set_xlabel("best validation loss")
    ax.set_ylabel("final validation loss")
    ax.grid(alpha=0.3)
    _legend_outside(fig)
    return save(fig, path)


def convergence(conv: pd.DataFrame, summary: pd.DataFrame, style: dict, path: Path) -> Path | None:
    if conv.empty:
        return None
    conv = conv.merge(summary[["run", "group"]], on="run")
    stats = conv.groupby(["group", "layer"])["fraction"].agg(["mean", "std", "count"]).reset_index()
    fig, ax = figure(8, 4.5)
    for g in sorted(stats["group"].unique(), key=natural):
        rows = stats[stats["group"] == g]
        ax.errorbar(rows["layer"], rows["mean"], yerr=rows["std"].fillna(0), color=style[g]["color"], ls=style[g]["ls"],
                    marker=style[g]["marker"], capsize=3, label=f"{g} (n={int(rows['count'].max())})")
    ax.set_xlabel("layer")
    ax.set_ylabel("fraction of training until CKA-to-final stays >= threshold")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    _legend_outside(fig)
    return save(fig, path)


def cka_curves(curves: pd.DataFrame, summary: pd.DataFrame, style: dict, threshold: float, path: Path) -> Path | None:
    """One panel per layer: CKA-to-final over the fraction of training, the mean over each group's runs as a line
    and the range of its runs (lowest to highest) shaded; a group without the layer (a shallower model) is absent
    from that panel."""
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
    return save(fig, path)
