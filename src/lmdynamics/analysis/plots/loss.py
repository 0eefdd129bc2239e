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

from lmdynamics.analysis import summaries as S

from .common import SkipFigure, figure, save, step_label, log_steps, model_colors, legend_outside


LOSS_STYLE = {"val_loss": ("-", "o", 1.0), "loss": ("-", None, 0.9), "train_loss": (":", None, 0.6),
              "probe_loss": ("--", "s", 0.9)}


@figure
def plot_loss(frame: pd.DataFrame, path: Path) -> Path:
    """Loss curves of every model (colour) and loss kind (line style) over training steps (linear axis)."""
    rows = S.select(frame, S.LOSS_METRICS, "model", layer=-1).dropna(subset=["value"])
    if rows.empty:
        raise SkipFigure("no loss/train_loss/val_loss rows (layer -1, component 'model')")
    models = S.model_order(rows)
    palette = model_colors(models)
    lengths = S.final_steps(rows)
    fig = Figure(figsize=(12.0, 4.6), layout="constrained")
    whole, late = fig.subplots(1, 2)
    for model in models:
        for metric, (ls, marker, alpha) in LOSS_STYLE.items():
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
    fig.suptitle("Loss over training (a late rise of val_loss is saturation)")
    legend_outside(fig, *whole.get_legend_handles_labels())
    return save(fig, path)
