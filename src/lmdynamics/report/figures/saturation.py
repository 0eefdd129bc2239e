"""Saturation figures: every model's curve with best and onset marked, one side-by-side figure per model
(the curve, the head's KL-to-uniform, the head's ER, last-layer anisotropy on a shared step axis), and the
scaling-law figure (loss over tokens per model with the fitted law)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lmdynamics.report.figures.common import model_colors as _model_colors
from lmdynamics.report.figures.common import save, slug
from lmdynamics.saturation.scaling import Law, as_loss
from lmdynamics.saturation.signals import ANISOTROPY, HEAD, SIGNALS, head_components, signal_series


def _mark(ax, steps, values, fields: dict, color, label: str | None = None, legend: bool = True) -> None:
    """The curve, a star at the best checkpoint and a dashed line at the onset (legend entries if ``legend``)."""
    ax.plot(steps, values, marker="o", ms=3, color=color, label=label)
    ax.plot([fields["best_step"]], [fields["best_value"]], marker="*", ms=14, color=color, mec="k", ls="none",
            label="best" if legend else None)
    if not math.isnan(fields["onset_step"]):
        ax.axvline(fields["onset_step"], color=color, ls="--", lw=1, label="onset" if legend else None)


def _log_if_wide(ax, values: pd.Series) -> None:
    """Log y axis for a positive series spanning more than a factor 20 (perplexities from step 0)."""
    if (values > 0).all() and values.max() / values.min() > 20:
        ax.set_yscale("log")


def plot_curves(series: pd.DataFrame, results: pd.DataFrame, metric: str, path: Path) -> Path:
    """All models' curves of ``metric`` (stars: best checkpoint; dashed: onset)."""
    models = list(results["model"])
    colors = _model_colors(models)
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for _, r in results.iterrows():
        s = series[series.model == r.model].sort_values("step")
        _mark(ax, s.step, s.value, r.to_dict(), colors[r.model], label=r.model, legend=False)
    _log_if_wide(ax, series.value)
    ax.set_xlabel("training step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: best checkpoint (star) and saturation onset (dashed)")
    ax.legend(fontsize=7)
    return save(fig, path)


def plot_side_by_side(series: pd.DataFrame, frame: pd.DataFrame, fields: dict, metric: str, path: Path) -> Path:
    """One model: its curve of ``metric`` and the head signals from ``frame`` on a shared step axis."""
    model = fields["model"]
    fig = Figure(figsize=(7.5, 9.0), layout="constrained")
    axes = fig.subplots(4, 1, sharex=True)
    own = series[series.model == model].sort_values("step")
    _mark(axes[0], own.step, own.value, fields, "C0")
    axes[0].set_ylabel(metric)
    _log_if_wide(axes[0], own.value)
    verdict = "saturated" if fields["saturated"] else "not saturated"
    axes[0].set_title(f"{model}: {metric} ({verdict}, final {fields['gap']:+.1%} vs best)")
    axes[0].legend(fontsize=7)
    for ax, (signal, (label, _)) in zip(axes[1:], SIGNALS.items()):
        rows = signal_series(frame, model, signal)
        if rows.empty:
            ax.text(0.5, 0.5, f"no {signal} rows in the table", ha="center", va="center", transform=ax.transAxes)
        else:
            components = head_components(frame, model, signal) if signal != ANISOTROPY else []
            if components and components != [HEAD]:  # a mixture: its components faint, then their mean
                for c in components:
                    own = signal_series(frame, model, signal, c)
                    ax.plot(own.step, own.value, color="C1", alpha=0.35, lw=0.8)
                label += f" (mean of {len(components)} components)"
            ax.plot(rows.step, rows.value, marker=".", color="C1")
        if not math.isnan(fields["onset_step"]):
            ax.axvline(fields["onset_step"], color="C0", ls="--", lw=1)
        ax.set_ylabel(label, fontsize=8)
    axes[-1].set_xlabel("training step")
    return save(fig, path / f"side_by_side_{slug(model)}.png" if path.is_dir() else path)


def plot_scaling(rows: pd.DataFrame, metric: str, law: Law, table: pd.DataFrame, path):
    """Loss vs tokens per model (points) with the fitted law at each model's size (dashed), as in the paper."""
    frame = rows[rows.step > 0].assign(loss=as_loss(metric, rows.value))
    colors = _model_colors(list(table.model))
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.subplots()
    for _, r in table.iterrows():
        own = frame[frame.model == r.model].sort_values("tokens")
        ax.plot(own.tokens, own.loss, marker="o", ms=3, lw=1, color=colors[r.model],
                label=f"{r.model} (final {r.final_gap:+.1%}, best {r.best_gap:+.1%})")
        t = np.geomspace(own.tokens.min(), own.tokens.max(), 100)
        ax.plot(t, law(r.N, t), ls="--", lw=1, color=colors[r.model])
    ax.set_xscale("log")
    ax.set_xlabel("training tokens")
    ax.set_ylabel(f"loss ({'ln ' if as_loss(metric, pd.Series([math.e])).iloc[0] == 1 else ''}{metric})")
    ax.set_title(f"L = {law.A:.4g}/N^{law.alpha:.3g} + {law.B:g}/T^{law.beta:g} + {law.E:g} (dashed)")
    ax.legend(fontsize=7)
    return save(fig, path)
