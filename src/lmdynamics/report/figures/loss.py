"""Loss curves."""

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

from lmdynamics import catalogue
from lmdynamics import summaries as S

from .common import SkipFigure, figure, save, step_label, log_steps, model_colors, legend_outside


LOSS_STYLE = {"val_loss": ("-", "o", 1.0), "loss": ("-", None, 0.9), "train_loss": (":", None, 0.6),
              "probe_loss": ("--", "s", 0.9)}


def _what(metrics: list[str], names: bool = True) -> str:
    """'validation loss `val_loss` and training loss `train_loss`': the losses as the catalogue labels them (and,
    with ``names``, their table names as Markdown code; a figure's legend names them instead)."""
    return " and ".join(catalogue.label(m) + (f" `{m}`" if names else "") for m in metrics)


def saturation_note(metrics: list[str], caption: bool = False) -> str:
    """What a late rise of the losses shown would mean: saturation only for a held-out loss that is drawn."""
    held_out = [m for m in metrics if m in S.HELD_OUT_LOSSES]
    if not held_out:
        return "training loss only: no held-out loss to show saturation"
    name = catalogue.label(held_out[0]).split(" (")[0]
    if held_out[0] != "probe_loss":
        return f"a late rise of the {name} is saturation"
    return (f"a late rise of the {name} is saturation when the probe is held-out text"
            + (" (a training run's probe comes from its validation split; a hub model's is whatever text "
               "`probe.source` names)" if caption else ""))


def loss_caption(frame: pd.DataFrame) -> str:
    """The report's caption of ``plot_loss``: which losses it draws and what a late rise of them means."""
    metrics = S.loss_metrics(frame)
    if not metrics:
        return "Loss curves over training."
    return (f"Loss over training steps (log steps over the whole run, linear steps over the second half): {_what(metrics)}; "
            f"{saturation_note(metrics, caption=True)}.")


@figure
def plot_loss(frame: pd.DataFrame, path: Path) -> Path:
    """Loss curves of every model (colour) and loss kind (line style) over training steps; the title names the
    losses drawn (an offline analysis has only ``probe_loss``) and says saturation only of a held-out one."""
    rows = S.select(frame, S.LOSS_METRICS, "model", layer=-1).dropna(subset=["value"])
    if rows.empty:
        raise SkipFigure(f"no {'/'.join(S.LOSS_METRICS)} rows (layer -1, component 'model')")
    metrics = S.loss_metrics(rows)
    models = S.model_order(rows)
    palette = model_colors(models)
    lengths = S.final_steps(rows)
    fig = Figure(figsize=(12.0, 4.6), layout="constrained")
    whole, late = fig.subplots(1, 2)
    for model in models:
        for metric in metrics:
            ls, marker, alpha = LOSS_STYLE.get(metric, ("-", None, 0.9))
            r = rows[(rows["model"] == model) & (rows["metric"] == metric)]
            if r.empty:
                continue
            label = f"{S.short_name(model)} · {metric}" if len(models) > 1 else metric
            style = {"ls": ls, "marker": marker, "ms": 3, "lw": 1.3, "alpha": alpha, "color": palette[model]}
            whole.plot(r["step"], r["value"], label=label, **style)
            second_half = r[r["step"] >= lengths[model] / 2]
            late.plot(second_half["step"], second_half["value"], **style)
    log_steps(whole, rows)
    whole.set_title("whole run (log steps)")
    late.set_xlabel(step_label(rows))
    late.set_title("second half of training (linear steps, zoomed)")
    for ax in (whole, late):
        ax.set_ylabel("cross-entropy loss (nats / token)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{_what(metrics, names=False)} over training\n({saturation_note(metrics)})", fontsize=11)
    legend_outside(fig, *whole.get_legend_handles_labels())
    return save(fig, path)


HEALTH_METRICS = ("lr", "grad_norm")


def training_health_caption(frame: pd.DataFrame) -> str:
    return ("Training health: the learning rate `lr` each update used (the schedule) and the global gradient norm "
            "`grad_norm` before clipping, per training step; a norm that climbs or spikes while the loss stalls is "
            "the usual sign of a rate too high for the model.")


@figure
def plot_training_health(frame: pd.DataFrame, path: Path) -> Path:
    """Learning rate and gradient norm (before clipping) over training steps, one panel each, every model."""
    rows = S.select(frame, list(HEALTH_METRICS), "model", layer=-1).dropna(subset=["value"])
    if rows.empty:
        raise SkipFigure("no lr / grad_norm rows (layer -1, component 'model'): training runs log them")
    models = S.model_order(rows)
    palette = model_colors(models)
    fig = Figure(figsize=(12.0, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, metric, ylabel in zip(axes, HEALTH_METRICS, ("learning rate", "gradient norm (before clipping)")):
        for model in models:
            r = rows[(rows["model"] == model) & (rows["metric"] == metric)].sort_values("step")
            if not r.empty:
                ax.plot(r["step"], r["value"], lw=1.2, color=palette[model], label=S.short_name(model))
        if metric == "grad_norm" and (rows.loc[rows["metric"] == metric, "value"] > 0).all():
            ax.set_yscale("log")
        ax.set_xlabel(step_label(rows))
        ax.set_ylabel(ylabel)
        ax.set_title(f"{ylabel} ({metric})")
        ax.grid(alpha=0.3)
    fig.suptitle("training health: learning rate and gradient norm per step", fontsize=11)
    if len(models) > 1:
        legend_outside(fig, *axes[0].get_legend_handles_labels())
    return save(fig, path)
