"""The output head (spectrum, KL-to-uniform) and anisotropy of the representations."""

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
    SkipFigure, at_step, figure, layer_axis, legend_outside, log_steps, model_colors, model_handles, panels,
    pick_model, save,
)


@figure
def plot_head_spectrum(frame: pd.DataFrame, path: Path, model: str | None = None) -> Path:
    """The head's normalised singular spectrum at each measured step (colour = step) and KL-to-uniform."""
    spec = S.select(frame, "sv_norm", "head", layer=-1)
    kl = S.select(frame, "kl_uniform", "head", layer=-1)
    model = pick_model(pd.concat([spec, kl]), model, "head sv_norm or kl_uniform")
    spec, kl = spec[spec["model"] == model], kl[kl["model"] == model]
    fig, axes = panels(int(not spec.empty) + int(not kl.empty), width=5.2, height=4.0)
    if not spec.empty:
        ax = axes[0]
        steps = np.sort(spec["step"].unique())
        cmap = matplotlib.colormaps["plasma"]
        norm = colors.SymLogNorm(linthresh=1.0, vmin=0, vmax=max(float(steps[-1]), 1.0), base=10)
        for step, g in spec.groupby("step"):
            g = g.sort_values("index")
            ax.plot(g["index"] + 1, g["value"], color=cmap(norm(step)), lw=1.1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("singular value index (1 = largest)")
        ax.set_ylabel("σᵢ / σ_max")
        ax.set_title(f"head spectrum at {len(steps)} steps")
        ax.grid(alpha=0.3, which="both")
        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="training step")
    if not kl.empty:
        ax = axes[-1]
        ax.plot(kl["step"], kl["value"], marker="o", ms=3, lw=1.4, color="black")
        log_steps(ax, kl)
        ax.set_ylabel("KL(p ‖ uniform), p = s / Σs (nats)")
        ax.set_title("singular entropy gap of the head")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{S.short_name(model)}: output head (softmax bottleneck)")
    return save(fig, path)


def models_over_steps(rows: pd.DataFrame, path: Path, ylabel: str, title: str, label: Callable[[str, pd.DataFrame], str]) -> Path:
    """One line per model of ``value`` over training steps (log axis), legend outside."""
    models = S.model_order(rows)
    palette = model_colors(models)
    fig = Figure(figsize=(8.0, 4.4), layout="constrained")
    ax = fig.subplots()
    for m in models:
        r = rows[rows["model"] == m]
        ax.plot(r["step"], r["value"], marker="o", ms=3, lw=1.4, color=palette[m], label=label(m, r))
    log_steps(ax, rows)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    legend_outside(fig, *ax.get_legend_handles_labels())
    return save(fig, path)


@figure
def plot_kl_uniform(frame: pd.DataFrame, path: Path) -> Path:
    """KL-to-uniform of the head's singular values over training, every model in one panel."""
    kl = S.select(frame, "kl_uniform", "head", layer=-1)
    if kl.empty:
        raise SkipFigure("no kl_uniform rows of component 'head' at layer -1")
    return models_over_steps(kl, path, "KL(p ‖ uniform), p = s / Σs (nats)",
                              "Head singular spectrum: KL to uniform over training", lambda m, r: S.short_name(m))


@figure
def plot_anisotropy_over_steps(frame: pd.DataFrame, path: Path) -> Path:
    """Last-layer anisotropy (final hidden state, else deepest residual stream) over training per model."""
    aniso = S.last_layer_anisotropy(frame)
    if aniso.empty:
        raise SkipFigure("no anisotropy rows of 'final' (layer -1) or of per-layer 'resid'")
    return models_over_steps(aniso, path, "anisotropy (mean pairwise cosine)",
                              "Last-layer anisotropy on the probe over training",
                              lambda m, r: f"{S.short_name(m)} ({r['source'].iloc[0]})")


@figure
def plot_anisotropy_by_layer(frame: pd.DataFrame, path: Path, components: Sequence[str] | None = None) -> Path:
    """Anisotropy per layer at each model's first (dotted) and last (solid) measured step."""
    rows = S.select(frame, "anisotropy", per_layer=True)
    comps = S.layer_components(rows, "anisotropy", components)
    if not comps:
        raise SkipFigure("no per-layer anisotropy rows")
    if rows["layer"].nunique() < 2:
        raise SkipFigure(f"anisotropy of one layer only (layer {int(rows['layer'].iloc[0])}): a per-layer figure "
                         "needs two or more; anisotropy_steps shows it over training")
    models = S.model_order(rows)
    palette = model_colors(models)
    first, last = at_step(rows, "first"), at_step(rows, "final")
    fig, axes = panels(len(comps))
    for ax, comp in zip(axes, comps):
        for m in models:
            for part, ls, alpha in ((first, ":", 0.7), (last, "-", 1.0)):
                r = part[(part["model"] == m) & (part["component"] == comp)]
                ax.plot(r["layer"], r["value"], ls=ls, marker="o", ms=3, lw=1.3, alpha=alpha, color=palette[m])
        layer_axis(ax, "anisotropy (mean pairwise cosine)", f"component: {comp}")
    handles, labels = model_handles(models, palette, ms=3)
    handles += [Line2D([], [], color="0.3", ls=":"), Line2D([], [], color="0.3", ls="-")]
    labels += ["first measured step", "last measured step"]
    legend_outside(fig, handles, labels, below=True)
    fig.suptitle("Anisotropy per layer on the probe")
    return save(fig, path)
