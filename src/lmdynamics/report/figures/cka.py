"""Layer convergence: CKA over training per layer, its spread across models, and when each layer settles."""

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
from matplotlib.lines import Line2D

from lmdynamics import summaries as S

from .common import (
    SkipFigure, cka_label, cka_norm, figure, fmt_count, layer_axis, layer_colorbar, layer_colors,
    legend_outside, log_steps, model_colors, model_handles, panels, pick_model, save, step_label,
)


def _one_model_layers(frame: pd.DataFrame, model: str | None, metric: str, components):
    """(model, its per-layer ``metric`` rows, the components to draw); SkipFigure if there are none."""
    rows = S.select(frame, metric, per_layer=True)
    model = pick_model(rows, model, metric)
    rows = rows[rows["model"] == model]
    comps = S.layer_components(rows, metric, components)
    if not comps:
        raise SkipFigure(f"no {metric} rows for the components asked for ({components})")
    return model, rows, comps


@figure
def plot_cka_lines(frame: pd.DataFrame, path: Path, model: str | None = None, metric: str = "cka_final",
                   components: Sequence[str] | None = None, threshold: float = 0.95) -> Path:
    """CKA of every layer over training steps (log steps), one panel per component, colour = layer."""
    model, rows, comps = _one_model_layers(frame, model, metric, components)
    n_layers = int(rows["layer"].max()) + 1
    cmap, norm, mappable = layer_colors(n_layers)
    fig, axes = panels(len(comps))
    for ax, comp in zip(axes, comps):
        r = rows[rows["component"] == comp]
        for layer, g in r.groupby("layer"):
            ax.plot(g["step"], g["value"], color=cmap(norm(layer)), lw=1.4, marker=".", ms=3)
        ax.axhline(threshold, color="0.4", ls="--", lw=1)
        log_steps(ax, r)
        ax.set_ylabel("CKA")
        ax.set_title(f"component: {comp}")
        ax.grid(alpha=0.3)
    layer_colorbar(fig, axes, mappable, n_layers)
    fig.suptitle(f"{S.short_name(model)}: {cka_label(metric)} per layer (dashed: {threshold})")
    return save(fig, path)


def step_edges(steps: np.ndarray) -> np.ndarray:
    """Cell edges on the step axis for measurements at ``steps`` (sorted): halfway between neighbours on the
    symlog axis (the geometric mean above step 1, the arithmetic one below), mirrored at both ends, never
    below 0. A cell is as wide as the training it stands for, so columns one step apart are thin."""
    steps = np.asarray(steps, float)
    if len(steps) == 1:
        return np.array([max(0.0, steps[0] - 0.5), steps[0] + 0.5])
    mids = np.array([np.sqrt(a * b) if a >= 1 else (a + b) / 2 for a, b in zip(steps[:-1], steps[1:])])
    first = max(0.0, steps[0] - (mids[0] - steps[0]))
    last = steps[-1] ** 2 / mids[-1] if mids[-1] >= 1 else steps[-1] + (steps[-1] - mids[-1])
    return np.concatenate([[first], mids, [last]])


@figure
def plot_cka_heatmap(frame: pd.DataFrame, path: Path, model: str | None = None, metric: str = "cka_final",
                     components: Sequence[str] | None = None, threshold: float = 0.95) -> Path:
    """Layer x step heatmap of CKA per component; diverging colours with the midpoint at ``threshold``."""
    model, rows, comps = _one_model_layers(frame, model, metric, components)
    steps = np.sort(rows["step"].unique())
    n_layers = int(rows["layer"].max()) + 1
    norm = cka_norm(rows["value"].to_numpy(), threshold)
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="0.85")
    height = min(5.5, max(2.6, 0.16 * n_layers + 1.6))
    fig, axes = panels(len(comps), width=max(4.6, 0.2 * len(steps) + 2.0), height=height,
                        ncols=1 if len(steps) > 40 else None)
    image = None
    edges = step_edges(steps)
    for ax, comp in zip(axes, comps):
        grid = (rows[rows["component"] == comp].pivot(index="layer", columns="step", values="value")
                .reindex(index=range(n_layers), columns=steps))
        values = np.ma.masked_invalid(grid.to_numpy(float))
        image = ax.pcolormesh(edges, np.arange(n_layers + 1) - 0.5, values, cmap=cmap, norm=norm, shading="flat")
        log_steps(ax, rows)
        ax.set_xlim(edges[0], edges[-1])
        ax.set_yticks(list(range(0, n_layers, max(1, math.ceil(n_layers / 12)))))
        ax.set_xlabel(step_label(rows), fontsize=8)
        ax.set_ylabel("layer")
        ax.set_title(f"component: {comp}")
    bar = fig.colorbar(image, ax=axes, shrink=0.9)
    bar.set_label(f"CKA (colour midpoint {threshold})")
    below = matplotlib.ticker.MaxNLocator(5).tick_values(norm.vmin, threshold)
    below = [t for t in below if norm.vmin <= t and float(norm(t)) <= 0.42]  # keep clear of the midpoint label
    bar.set_ticks(sorted({*below, threshold, norm.vmax}))
    bar.minorticks_off()
    fig.suptitle(f"{S.short_name(model)}: {cka_label(metric)}\n(log step axis; a measurement's cell reaches halfway "
                 "to its neighbours)", fontsize=10)
    return save(fig, path)


@figure
def plot_cka_box(frame: pd.DataFrame, path: Path, metric: str = "cka_final",
                 components: Sequence[str] | None = None, at_fraction: float = 0.2,
                 threshold: float = 0.95) -> Path:
    """Per model, a box of its layers' CKA at the measured step nearest ``at_fraction`` of training."""
    rows = S.select(frame, metric, per_layer=True)
    comps = S.layer_components(rows, metric, components)
    if not comps:
        raise SkipFigure(f"no per-layer {metric} rows")
    models = S.model_order(rows)
    lengths = S.final_steps(frame)
    at = {m: S.nearest_step(rows.loc[rows["model"] == m, "step"], at_fraction * lengths[m]) for m in models}
    palette = model_colors(models)
    fig, axes = panels(len(comps), width=max(4.2, 1.1 * len(models) + 1.5))
    rng = np.random.default_rng(0)
    for ax, comp in zip(axes, comps):
        data = [rows[(rows["model"] == m) & (rows["component"] == comp) & (rows["step"] == at[m])]["value"]
                .dropna().to_numpy(float) for m in models]
        labels = [f"{S.short_name(m)}\nstep {fmt_count(at[m])}" for m in models]
        ax.boxplot(data, tick_labels=labels, widths=0.55, showfliers=False)
        for i, (m, d) in enumerate(zip(models, data), start=1):
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(d)), d, s=12, color=palette[m], zorder=3, alpha=0.8)
        ax.axhline(threshold, color="0.4", ls="--", lw=1)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_ylabel("CKA (one dot per layer)")
        ax.set_title(f"component: {comp}")
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{cka_label(metric)} at ~{at_fraction:.0%} of training, per model (dashed: {threshold})")
    return save(fig, path)


@figure
def plot_convergence_fraction(frame: pd.DataFrame, path: Path, metric: str = "cka_final",
                              threshold: float = 0.95, components: Sequence[str] | None = None) -> Path:
    """Per layer, the first step after which CKA stays >= threshold, as a fraction of training, per model."""
    conv = S.convergence_steps(frame, threshold, metric)
    conv = conv[conv["layer"] >= 0]
    comps = S.layer_components(frame, metric, components)
    conv = conv[conv["component"].isin(comps)]
    if conv.empty:
        raise SkipFigure(f"no per-layer {metric} rows")
    models = S.model_order(frame[frame["model"].isin(conv["model"])])
    palette = model_colors(models)
    fig, axes = panels(len(comps))
    any_never = False
    for ax, comp in zip(axes, comps):
        for m in models:
            c = conv[(conv["model"] == m) & (conv["component"] == comp)]
            ax.plot(c["layer"], c["fraction"], marker="o", ms=4, lw=1.3, color=palette[m])
            # the crossing lies after the previous measured step: a bar down to it shows the resolution
            known = c[c["converged"].astype(bool)]
            ax.errorbar(known["layer"], known["fraction"], yerr=[known["resolution"], np.zeros(len(known))],
                        fmt="none", ecolor=palette[m], elinewidth=1, capsize=3, alpha=0.6)
            never = c[~c["converged"].astype(bool)]
            if not never.empty:
                any_never = True
                ax.scatter(never["layer"], np.full(len(never), 1.06), marker="x", s=40, color=palette[m],
                           clip_on=False, zorder=3)
        ax.set_ylim(-0.02, 1.1)
        layer_axis(ax, "fraction of training", f"component: {comp}")
    handles, labels = model_handles(models, palette)
    if any_never:
        handles.append(Line2D([], [], color="0.3", marker="x", ls="none"))
        labels.append(f"never stays ≥ {threshold}")
    known = conv[conv["converged"].astype(bool)]
    if not known.empty:
        handles.append(Line2D([], [], color="0.3", marker="_", ms=8, ls="-", lw=1))
        labels.append("bar: back to the previous measured step (the crossing lies in between)")
    legend_outside(fig, handles, labels, below=True)
    resolution = (f"\nresolution: the measured steps; the widest gap around a crossing is "
                  f"{known['resolution'].max():.2g} of training" if not known.empty else "")
    fig.suptitle(f"First measured step after which {cka_label(metric)} stays ≥ {threshold}{resolution}")
    return save(fig, path)
