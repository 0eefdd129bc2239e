"""Rank of the weights: a catalogue measurement of every weight matrix per layer, and PER against convergence."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib import colors
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure

from lmdynamics import catalogue
from lmdynamics import summaries as S

from .common import (
    SkipFigure, at_step, cka_label, figure, layer_axis, layer_colorbar, layer_colors, legend_outside, log_steps,
    matrix_order, model_colors, model_handles, ov_merged, panels, pick_model, save,
)


def _label(metric: str) -> str:
    """The y label of a rank measurement, with the normaliser of the OV panel stated where it matters."""
    return catalogue.get(metric).axis_label() if metric in catalogue.CATALOGUE or metric.startswith("grad_") else metric


def _matrix_title(comp: str, metric: str) -> str:
    """A panel's title: the matrix, and for the PER variants the normaliser it is divided by."""
    base = metric.removeprefix("grad_")
    if comp != "ov":
        return f"{comp} (ER / min(m, n))" if base == "per_attainable" else comp
    note = " (mean over heads"
    if base == "per":
        note += "; ER / d, while an OV circuit's rank is at most d_head: see per_attainable"
    elif base == "per_attainable":
        note += "; ER / d_head" if base == metric else "; ER / min(2 d_head, d)"
    elif base == "gini":  # the spectrum of a d x d matrix of rank <= d_head: at least d - d_head zeros
        note += "; over all d singular values, at least d - d_head of them 0"
    return "ov" + note + ")"


@figure
def plot_rank_over_steps(frame: pd.DataFrame, path: Path, model: str | None = None, metric: str = "per",
                         components: Sequence[str] | None = None) -> Path:
    """A rank measurement of the catalogue (default PER) of every layer's weight matrices over steps (one panel
    per matrix, colour = layer; the input embedding and the head in a panel of their own)."""
    rows = S.select(frame, metric)
    model = pick_model(rows, model, metric)
    rows = rows[rows["model"] == model]
    layered = ov_merged(rows[rows["layer"] >= 0])
    comps = matrix_order(layered["component"]) if components is None else \
        [c for c in components if c in set(layered["component"])]
    model_level = rows[(rows["layer"] < 0) & rows["component"].isin(["embed_in", "head"])]
    n = len(comps) + (not model_level.empty)
    if n == 0:
        raise SkipFigure(f"no {metric} rows on weight matrices")
    fig, axes = panels(n)
    n_layers = int(layered["layer"].max()) + 1 if not layered.empty else 1
    cmap, norm, mappable = layer_colors(n_layers)
    for ax, comp in zip(axes, comps):
        r = layered[layered["component"] == comp]
        for layer, g in r.groupby("layer"):
            ax.plot(g["step"], g["value"], color=cmap(norm(layer)), lw=1.4, marker=".", ms=3)
        ax.set_title(_matrix_title(comp, metric), fontsize=9)
    if not model_level.empty:
        ax = axes[-1]
        for comp, g in model_level.groupby("component"):
            ax.plot(g["step"], g["value"], lw=1.6, marker=".", ms=3, label=comp,
                    color="black" if comp == "head" else "tab:orange")
        ax.legend(fontsize=8, loc="best")
        ax.set_title(_matrix_title("input embedding and output head", metric), fontsize=9)
    for ax in axes:
        log_steps(ax, rows)
        ax.set_ylabel(_label(metric))
        ax.grid(alpha=0.3)
    if comps:
        layer_colorbar(fig, axes[:len(comps)], mappable, n_layers)
    fig.suptitle(f"{S.short_name(model)}: {catalogue.label(metric)} over training")
    return save(fig, path)


@figure
def plot_rank_by_layer(frame: pd.DataFrame, path: Path, metric: str = "per",
                       components: Sequence[str] | None = None, step: str | int = "final") -> Path:
    """A rank measurement (default PER) per layer (x) for every model (colour), one panel per weight matrix,
    at each model's last step."""
    rows = ov_merged(S.select(frame, metric, per_layer=True))
    rows = at_step(rows, step)
    comps = matrix_order(rows["component"]) if components is None else \
        [c for c in components if c in set(rows["component"])]
    if rows.empty or not comps:
        raise SkipFigure(f"no per-layer {metric} rows at step {step!r}")
    models = S.model_order(rows)
    palette = model_colors(models)
    fig, axes = panels(len(comps))
    for ax, comp in zip(axes, comps):
        for m in models:
            r = rows[(rows["model"] == m) & (rows["component"] == comp)]
            ax.plot(r["layer"], r["value"], marker="o", ms=4, lw=1.3, color=palette[m])
        ax.set_title(_matrix_title(comp, metric), fontsize=9)
        layer_axis(ax, _label(metric))
    where = "each model's last measured step" if step == "final" else f"step {step}"
    legend_outside(fig, *model_handles(models, palette), below=True)
    fig.suptitle(f"{catalogue.label(metric)} per layer at {where}")
    return save(fig, path)


@figure
def plot_per_vs_convergence(frame: pd.DataFrame, path: Path, threshold: float = 0.95,
                            cka_metric: str = "cka_final", **kwargs) -> Path:
    """Scatter of layer PER against convergence fraction, Pearson and Spearman in the title. A point's fraction
    is the mean over the layer's components (``summaries.per_convergence_points``), so it lies between the
    measured fractions of its components; the y label says so."""
    points = S.per_convergence_points(frame, threshold=threshold, cka_metric=cka_metric, **kwargs)
    if points.empty:
        raise SkipFigure(f"needs both per-layer 'per' rows and per-layer {cka_metric} rows")
    corr = S.per_vs_convergence(frame, points=points).set_index("model")
    models = S.model_order(points)
    palette = model_colors(models)
    fig = Figure(figsize=(8.0, 5.0), layout="constrained")
    ax = fig.subplots()
    for m in models:
        p = points[points["model"] == m]
        rho = corr.loc[m, "spearman_rho"]
        label = S.short_name(m) + (f" (ρ = {rho:+.2f})" if np.isfinite(rho) else "")
        ax.scatter(p["per"], p["fraction"], s=30, color=palette[m], label=label, alpha=0.85)
    pooled = corr.loc["all" if len(models) > 1 else models[0]]

    n = int(pooled["n"])

    def show(v: float, p: float) -> str:
        if not np.isfinite(v):
            return "n/a"
        verdict = S.correlation_verdict(p, n)
        return f"{v:+.2f} (p = {p:.2g}{'' if verdict == 'significant' else ', not significant'})"

    if np.isfinite(pooled["pearson_r"]) or np.isfinite(pooled["spearman_rho"]):
        values = (f"Pearson r = {show(pooled['pearson_r'], pooled['pearson_p'])}, "
                  f"Spearman ρ = {show(pooled['spearman_rho'], pooled['spearman_p'])}")
    elif points["fraction"].nunique() == 1:
        values = "no correlation to compute: every layer has the same convergence fraction (at the measured steps)"
    else:
        values = "no correlation to compute: fewer than 3 layers, or every layer has the same PER"
    ax.set_title(f"PER vs convergence over n = {n} layers" + (" of all models" if len(models) > 1 else "")
                 + f"\n{values}\nsignificant: p < {S.ALPHA} with n ≥ {S.MIN_POINTS}; "
                 f"convergence: {cka_label(cka_metric)}", fontsize=9)
    ax.set_xlabel("layer PER (ER / min(m, n), mean over its weight matrices, at the last measured step)")
    comps = S.layer_components(frame, cka_metric, kwargs.get("cka_components"))
    ax.set_ylabel(f"first step staying ≥ {threshold} (fraction of training),\nmean over the layer's "
                  f"{len(comps)} components ({', '.join(comps)}) that converge", fontsize=9)
    ax.grid(alpha=0.3)
    legend_outside(fig, *ax.get_legend_handles_labels(), below=True)
    return save(fig, path)


#: The PER figures under their older names.
plot_per_over_steps = plot_rank_over_steps
plot_per_by_layer = plot_rank_by_layer
