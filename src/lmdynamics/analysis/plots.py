"""Figures from the tidy table: one function per figure, each writing one PNG and returning its path.

Every function reads only the tidy table (see ``lmdynamics.store``), draws with matplotlib's Agg canvas
(no pyplot, no global state), writes the PNG atomically (a hidden temporary file in the same directory,
then ``os.replace``) and returns the path. When the table lacks the rows a figure needs, the function
draws nothing and returns None; the reason is logged and passed to ``on_skip(reason)`` if given.

Which rows each figure needs (layer -1 = model level):
- ``plot_loss``: metrics loss / train_loss / val_loss at layer -1, component "model".
- ``plot_cka_lines``, ``plot_cka_heatmap``, ``plot_cka_box``, ``plot_convergence_fraction``: ``metric``
  (default "cka_final" = biased linear CKA; "cka_final_debiased" = unbiased HSIC) at layers >= 0.
- ``plot_per_over_steps``, ``plot_per_by_layer``: metric "per" on weight matrices (qkv, dense, mlp_in,
  mlp_out, ov_headNN averaged into "ov"); embed_in / head at layer -1 are drawn too when present.
- ``plot_per_vs_convergence``: both of the above.
- ``plot_head_spectrum``: component "head_spectrum", metric "sv_norm" (singular value index in ``layer``)
  and/or metric "kl_uniform" of component "head" at layer -1; ``plot_kl_uniform``: the latter.
- ``plot_anisotropy_over_steps``: metric "anisotropy" of "final" (layer -1), else of the deepest "resid".
- ``plot_anisotropy_by_layer``: metric "anisotropy" at layers >= 0.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib import colors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lmdynamics.analysis import summaries as S
from lmdynamics.atomic import atomic_path

log = logging.getLogger(__name__)

DPI = 110
CKA_VARIANTS = {
    "cka_final": "linear CKA to the final checkpoint (biased HSIC)",
    "cka_final_debiased": "linear CKA to the final checkpoint (unbiased HSIC)",
    "cka_prev": "linear CKA to the previous measurement (biased HSIC)",
    "cka_ref": "linear CKA to the reference model (biased HSIC)",
}
LOSS_STYLE = {"val_loss": ("-", "o", 1.0), "loss": ("-", None, 0.9), "train_loss": (":", None, 0.6),
              "probe_loss": ("--", "s", 0.9)}


class SkipFigure(Exception):
    """Raised inside a figure function when the table lacks the rows it needs."""


def cka_label(metric: str) -> str:
    """What a CKA metric name means, for titles (says biased or unbiased HSIC)."""
    if metric in CKA_VARIANTS:
        return CKA_VARIANTS[metric]
    if metric.endswith("_debiased"):
        return f"{metric.removesuffix('_debiased')} (unbiased HSIC)"
    return metric


def cka_norm(values: np.ndarray, threshold: float = 0.95) -> colors.TwoSlopeNorm:
    """Diverging colour scale for CKA with its midpoint at ``threshold`` (always vmin < threshold < vmax)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    lo = float(finite.min()) if finite.size else threshold - 0.05
    hi = float(finite.max()) if finite.size else 1.0
    vmin = min(lo, threshold - 0.05)
    vmax = max(hi, 1.0, threshold + 0.01)
    return colors.TwoSlopeNorm(vcenter=threshold, vmin=vmin, vmax=vmax)


def slug(model: str) -> str:
    """A model name usable in a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", S.short_name(model)) or "model"


def fmt_count(n: float) -> str:
    """143000 -> '143k', 2097152 -> '2.1M' (for step and token tick labels)."""
    n = float(n)
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            text = f"{n / div:.1f}".removesuffix(".0")
            return f"{text}{suffix}"
    return f"{n:g}"


# ------------------------------------------------------------------------------------------ plumbing
def _figure(fn: Callable) -> Callable:
    """Turn ``SkipFigure`` into a None return with the reason logged and handed to ``on_skip``."""

    @functools.wraps(fn)
    def wrapper(frame: pd.DataFrame, path: str | os.PathLike, *args, on_skip: Callable[[str], None] | None = None,
                **kwargs) -> Path | None:
        path = Path(path)
        try:
            return fn(frame, path, *args, **kwargs)
        except SkipFigure as skip:
            reason = f"{path.name}: {skip}"
            log.info("figure not drawn: %s", reason)
            if on_skip is not None:
                on_skip(reason)
            return None

    return wrapper


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (temporary file in the same directory, then rename)."""
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _panels(n: int, width: float = 4.6, height: float = 3.4, ncols: int | None = None, extra: float = 1.2):
    """A constrained-layout figure with ``n`` axes in a grid (unused cells removed)."""
    ncols = ncols or (n if n <= 3 else (2 if n == 4 else 3))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols + extra, height * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig, list(axes[:n])


def _step_label(rows: pd.DataFrame) -> str:
    """'training step', with the tokens per step when every plotted model trains on the same amount."""
    r = rows[(rows["step"] > 0) & (rows["tokens"] > 0)]
    if not r.empty:
        ratio = (r["tokens"] / r["step"]).to_numpy(float)
        if np.allclose(ratio, ratio[0], rtol=1e-6):
            return f"training step (1 step = {fmt_count(ratio[0])} tokens)"
    return "training step"


def _log_steps(ax, rows: pd.DataFrame) -> None:
    """Log-scaled step axis that still shows step 0 (symlog, linear below 1)."""
    ax.set_xscale("symlog", linthresh=1.0, linscale=0.4)
    ax.set_xlim(left=0)
    ax.set_xlabel(_step_label(rows))


def _model_colors(models: Sequence[str]) -> dict[str, tuple]:
    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(models)}


def _layer_colors(n_layers: int):
    """Discrete colour per layer (viridis) and the mappable for a 'layer' colourbar."""
    cmap = matplotlib.colormaps["viridis"].resampled(max(n_layers, 2))
    norm = colors.BoundaryNorm(np.arange(-0.5, n_layers + 0.5), cmap.N)
    return cmap, norm, ScalarMappable(norm=norm, cmap=cmap)


def _layer_colorbar(fig: Figure, axes, mappable, n_layers: int) -> None:
    bar = fig.colorbar(mappable, ax=axes, label="layer", shrink=0.9)
    step = max(1, math.ceil(n_layers / 12))
    bar.set_ticks(list(range(0, n_layers, step)))
    bar.minorticks_off()


def _pick_model(rows: pd.DataFrame, model: str | None, what: str) -> str:
    models = S.model_order(rows)
    if not models:
        raise SkipFigure(f"no {what} rows in the table")
    if model is None:
        if len(models) > 1:
            raise ValueError(f"the table holds {len(models)} models; pass model= one of {models}")
        return models[0]
    if model not in models:
        raise SkipFigure(f"no {what} rows for model {model!r}")
    return model


def _legend_outside(fig: Figure, handles, labels, below: bool = False) -> None:
    """A figure legend outside the axes (right, or below in columns), so that it never covers data."""
    if not handles:
        return
    if below:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(handles), 4), fontsize=8)
    else:
        fig.legend(handles, labels, loc="outside right upper", fontsize=8)


def _ov_merged(rows: pd.DataFrame) -> pd.DataFrame:
    """Per-head OV rows averaged into one 'ov' component per (model, layer, step)."""
    merged = rows.assign(component=rows["component"].map(lambda c: "ov" if S.is_head_component(c) else c))
    return merged.groupby(["model", "metric", "component", "layer", "step"], as_index=False).agg(
        tokens=("tokens", "max"), value=("value", "mean"))


def _matrix_order(components: Sequence[str]) -> list[str]:
    order = list(S.WEIGHT_MATRICES)
    return sorted(set(components), key=lambda c: (order.index(c) if c in order else len(order), c))


def _at_step(rows: pd.DataFrame, step: str | int) -> pd.DataFrame:
    """Rows at each model's last step ("final"), its first ("first"), or at a given step."""
    if step in ("final", "first"):
        pick = rows.groupby("model")["step"].transform("max" if step == "final" else "min")
        return rows[rows["step"] == pick]
    return rows[rows["step"] == int(step)]


# ------------------------------------------------------------------------------------------ loss
@_figure
def plot_loss(frame: pd.DataFrame, path: Path) -> Path:
    """Loss curves of every model (colour) and loss kind (line style) over training steps (linear axis)."""
    rows = S.select(frame, S.LOSS_METRICS, "model", layer=-1).dropna(subset=["value"])
    if rows.empty:
        raise SkipFigure("no loss/train_loss/val_loss rows (layer -1, component 'model')")
    models = S.model_order(rows)
    palette = _model_colors(models)
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
    _log_steps(whole, rows)
    whole.set_title("whole run (log steps)")
    late.set_xlabel(_step_label(rows))
    late.set_title("second half of training (linear steps, zoomed)")
    for ax in (whole, late):
        ax.set_ylabel("cross-entropy loss (nats / token)")
        ax.grid(alpha=0.3)
    fig.suptitle("Loss over training (a late rise of val_loss is saturation)")
    _legend_outside(fig, *whole.get_legend_handles_labels())
    return save(fig, path)


# ------------------------------------------------------------------------------------------ CKA
def _one_model_layers(frame: pd.DataFrame, model: str | None, metric: str, components):
    """(model, its per-layer ``metric`` rows, the components to draw); SkipFigure if there are none."""
    rows = S.select(frame, metric, per_layer=True)
    model = _pick_model(rows, model, metric)
    rows = rows[rows["model"] == model]
    comps = S.layer_components(rows, metric, components)
    if not comps:
        raise SkipFigure(f"no {metric} rows for the components asked for ({components})")
    return model, rows, comps


@_figure
def plot_cka_lines(frame: pd.DataFrame, path: Path, model: str | None = None, metric: str = "cka_final",
                   components: Sequence[str] | None = None, threshold: float = 0.95) -> Path:
    """CKA of every layer over training steps (log steps), one panel per component, colour = layer."""
    model, rows, comps = _one_model_layers(frame, model, metric, components)
    n_layers = int(rows["layer"].max()) + 1
    cmap, norm, mappable = _layer_colors(n_layers)
    fig, axes = _panels(len(comps))
    for ax, comp in zip(axes, comps):
        r = rows[rows["component"] == comp]
        for layer, g in r.groupby("layer"):
            ax.plot(g["step"], g["value"], color=cmap(norm(layer)), lw=1.4, marker=".", ms=3)
        ax.axhline(threshold, color="0.4", ls="--", lw=1)
        _log_steps(ax, r)
        ax.set_ylabel("CKA")
        ax.set_title(f"component: {comp}")
        ax.grid(alpha=0.3)
    _layer_colorbar(fig, axes, mappable, n_layers)
    fig.suptitle(f"{S.short_name(model)}: {cka_label(metric)} per layer (dashed: {threshold})")
    return save(fig, path)


@_figure
def plot_cka_heatmap(frame: pd.DataFrame, path: Path, model: str | None = None, metric: str = "cka_final",
                     components: Sequence[str] | None = None, threshold: float = 0.95) -> Path:
    """Layer x step heatmap of CKA per component; diverging colours with the midpoint at ``threshold``."""
    model, rows, comps = _one_model_layers(frame, model, metric, components)
    steps = np.sort(rows["step"].unique())
    n_layers = int(rows["layer"].max()) + 1
    norm = cka_norm(rows["value"].to_numpy(), threshold)
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="0.85")
    height = min(5.5, max(2.6, 0.16 * n_layers + 1.6))
    fig, axes = _panels(len(comps), width=max(4.6, 0.2 * len(steps) + 2.0), height=height,
                        ncols=1 if len(steps) > 40 else None)
    image = None
    tick_every = max(1, math.ceil(len(steps) / 25))
    for ax, comp in zip(axes, comps):
        grid = (rows[rows["component"] == comp].pivot(index="layer", columns="step", values="value")
                .reindex(index=range(n_layers), columns=steps))
        image = ax.imshow(grid.to_numpy(float), origin="lower", aspect="auto", cmap=cmap, norm=norm,
                          interpolation="nearest")
        ticks = list(range(0, len(steps), tick_every))
        ax.set_xticks(ticks, [fmt_count(steps[i]) for i in ticks], rotation=90, fontsize=7)
        ax.set_yticks(list(range(0, n_layers, max(1, math.ceil(n_layers / 12)))))
        ax.set_xlabel("training step (one column per measurement, not to scale)")
        ax.set_ylabel("layer")
        ax.set_title(f"component: {comp}")
    bar = fig.colorbar(image, ax=axes, shrink=0.9)
    bar.set_label(f"CKA (colour midpoint {threshold})")
    below = matplotlib.ticker.MaxNLocator(5).tick_values(norm.vmin, threshold)
    below = [t for t in below if norm.vmin <= t and float(norm(t)) <= 0.42]  # keep clear of the midpoint label
    bar.set_ticks(sorted({*below, threshold, norm.vmax}))
    bar.minorticks_off()
    fig.suptitle(f"{S.short_name(model)}: {cka_label(metric)}")
    return save(fig, path)


@_figure
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
    palette = _model_colors(models)
    fig, axes = _panels(len(comps), width=max(4.2, 1.1 * len(models) + 1.5))
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


@_figure
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
    palette = _model_colors(models)
    fig, axes = _panels(len(comps))
    any_never = False
    for ax, comp in zip(axes, comps):
        for m in models:
            c = conv[(conv["model"] == m) & (conv["component"] == comp)]
            ax.plot(c["layer"], c["fraction"], marker="o", ms=4, lw=1.3, color=palette[m])
            never = c[~c["converged"].astype(bool)]
            if not never.empty:
                any_never = True
                ax.scatter(never["layer"], np.full(len(never), 1.06), marker="x", s=40, color=palette[m],
                           clip_on=False, zorder=3)
        ax.set_ylim(-0.02, 1.1)
        ax.set_xlabel("layer")
        ax.set_ylabel("fraction of training")
        ax.set_title(f"component: {comp}")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles = [Line2D([], [], color=palette[m], marker="o", ms=4) for m in models]
    labels = [S.short_name(m) for m in models]
    if any_never:
        handles.append(Line2D([], [], color="0.3", marker="x", ls="none"))
        labels.append(f"never stays ≥ {threshold}")
    _legend_outside(fig, handles, labels, below=True)
    fig.suptitle(f"First step after which {cka_label(metric)} stays ≥ {threshold}")
    return save(fig, path)


# ------------------------------------------------------------------------------------------ effective rank
@_figure
def plot_per_over_steps(frame: pd.DataFrame, path: Path, model: str | None = None, metric: str = "per",
                        components: Sequence[str] | None = None) -> Path:
    """PER of every layer's weight matrices over steps (one panel per matrix, colour = layer)."""
    rows = S.select(frame, metric)
    model = _pick_model(rows, model, metric)
    rows = rows[rows["model"] == model]
    layered = _ov_merged(rows[rows["layer"] >= 0])
    comps = _matrix_order(layered["component"]) if components is None else \
        [c for c in components if c in set(layered["component"])]
    model_level = rows[(rows["layer"] < 0) & rows["component"].isin(["embed_in", "head"])]
    n = len(comps) + (not model_level.empty)
    if n == 0:
        raise SkipFigure(f"no {metric} rows on weight matrices")
    fig, axes = _panels(n)
    n_layers = int(layered["layer"].max()) + 1 if not layered.empty else 1
    cmap, norm, mappable = _layer_colors(n_layers)
    for ax, comp in zip(axes, comps):
        r = layered[layered["component"] == comp]
        for layer, g in r.groupby("layer"):
            ax.plot(g["step"], g["value"], color=cmap(norm(layer)), lw=1.4, marker=".", ms=3)
        ax.set_title(f"{comp}" + (" (mean over heads)" if comp == "ov" else ""))
    if not model_level.empty:
        ax = axes[-1]
        for comp, g in model_level.groupby("component"):
            ax.plot(g["step"], g["value"], lw=1.6, marker=".", ms=3, label=comp,
                    color="black" if comp == "head" else "tab:orange")
        ax.legend(fontsize=8, loc="best")
        ax.set_title("model level (layer -1)")
    for ax in axes:
        _log_steps(ax, rows)
        ax.set_ylabel(f"{metric.upper()} (ER / min(m, n))")
        ax.grid(alpha=0.3)
    if comps:
        _layer_colorbar(fig, axes[:len(comps)], mappable, n_layers)
    fig.suptitle(f"{S.short_name(model)}: proportional effective rank ({metric}) of the weights over training")
    return save(fig, path)


@_figure
def plot_per_by_layer(frame: pd.DataFrame, path: Path, metric: str = "per",
                      components: Sequence[str] | None = None, step: str | int = "final") -> Path:
    """PER per layer (x) for every model (colour), one panel per weight matrix, at each model's last step."""
    rows = _ov_merged(S.select(frame, metric, per_layer=True))
    rows = _at_step(rows, step)
    comps = _matrix_order(rows["component"]) if components is None else \
        [c for c in components if c in set(rows["component"])]
    if rows.empty or not comps:
        raise SkipFigure(f"no per-layer {metric} rows at step {step!r}")
    models = S.model_order(rows)
    palette = _model_colors(models)
    fig, axes = _panels(len(comps))
    for ax, comp in zip(axes, comps):
        for m in models:
            r = rows[(rows["model"] == m) & (rows["component"] == comp)]
            ax.plot(r["layer"], r["value"], marker="o", ms=4, lw=1.3, color=palette[m])
        ax.set_title(f"{comp}" + (" (mean over heads)" if comp == "ov" else ""))
        ax.set_xlabel("layer")
        ax.set_ylabel(f"{metric.upper()} (ER / min(m, n))")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    where = "each model's last measured step" if step == "final" else f"step {step}"
    _legend_outside(fig, [Line2D([], [], color=palette[m], marker="o", ms=4) for m in models],
                    [S.short_name(m) for m in models], below=True)
    fig.suptitle(f"Proportional effective rank ({metric}) per layer at {where}")
    return save(fig, path)


@_figure
def plot_per_vs_convergence(frame: pd.DataFrame, path: Path, threshold: float = 0.95,
                            cka_metric: str = "cka_final", **kwargs) -> Path:
    """Scatter of layer PER against convergence fraction, Pearson and Spearman in the title."""
    points = S.per_convergence_points(frame, threshold=threshold, cka_metric=cka_metric, **kwargs)
    if points.empty:
        raise SkipFigure(f"needs both per-layer 'per' rows and per-layer {cka_metric} rows")
    corr = S.per_vs_convergence(frame, points=points).set_index("model")
    models = S.model_order(points)
    palette = _model_colors(models)
    fig = Figure(figsize=(8.0, 5.0), layout="constrained")
    ax = fig.subplots()
    for m in models:
        p = points[points["model"] == m]
        rho = corr.loc[m, "spearman_rho"]
        label = S.short_name(m) + (f" (ρ = {rho:+.2f})" if np.isfinite(rho) else "")
        ax.scatter(p["per"], p["fraction"], s=30, color=palette[m], label=label, alpha=0.85)
    pooled = corr.loc["all" if len(models) > 1 else models[0]]

    def show(v: float) -> str:
        return f"{v:+.2f}" if np.isfinite(v) else "n/a"

    ax.set_title(f"PER vs convergence: Pearson r = {show(pooled['pearson_r'])}, Spearman ρ = "
                 f"{show(pooled['spearman_rho'])} over {int(pooled['n'])} layers"
                 + (" of all models" if len(models) > 1 else "") + f"\nconvergence: {cka_label(cka_metric)}",
                 fontsize=10)
    ax.set_xlabel("layer PER (mean over its weight matrices, at the last measured step)")
    ax.set_ylabel(f"first step staying ≥ {threshold} (fraction of training)")
    ax.grid(alpha=0.3)
    _legend_outside(fig, *ax.get_legend_handles_labels(), below=True)
    return save(fig, path)


# ------------------------------------------------------------------------------------------ head, anisotropy
@_figure
def plot_head_spectrum(frame: pd.DataFrame, path: Path, model: str | None = None) -> Path:
    """The head's normalised singular spectrum at each measured step (colour = step) and KL-to-uniform."""
    spec = S.select(frame, "sv_norm", "head_spectrum")
    kl = S.select(frame, "kl_uniform", "head", layer=-1)
    model = _pick_model(pd.concat([spec, kl]), model, "head_spectrum/sv_norm or head/kl_uniform")
    spec, kl = spec[spec["model"] == model], kl[kl["model"] == model]
    fig, axes = _panels(int(not spec.empty) + int(not kl.empty), width=5.2, height=4.0)
    if not spec.empty:
        ax = axes[0]
        steps = np.sort(spec["step"].unique())
        cmap = matplotlib.colormaps["plasma"]
        norm = colors.SymLogNorm(linthresh=1.0, vmin=0, vmax=max(float(steps[-1]), 1.0), base=10)
        for step, g in spec.groupby("step"):
            g = g.sort_values("layer")
            ax.plot(g["layer"] + 1, g["value"], color=cmap(norm(step)), lw=1.1)
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
        _log_steps(ax, kl)
        ax.set_ylabel("KL(p ‖ uniform), p = s / Σs (nats)")
        ax.set_title("singular entropy gap of the head")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{S.short_name(model)}: output head (softmax bottleneck)")
    return save(fig, path)


def _models_over_steps(rows: pd.DataFrame, path: Path, ylabel: str, title: str, label: Callable[[str, pd.DataFrame], str]) -> Path:
    """One line per model of ``value`` over training steps (log axis), legend outside."""
    models = S.model_order(rows)
    palette = _model_colors(models)
    fig = Figure(figsize=(8.0, 4.4), layout="constrained")
    ax = fig.subplots()
    for m in models:
        r = rows[rows["model"] == m]
        ax.plot(r["step"], r["value"], marker="o", ms=3, lw=1.4, color=palette[m], label=label(m, r))
    _log_steps(ax, rows)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _legend_outside(fig, *ax.get_legend_handles_labels())
    return save(fig, path)


@_figure
def plot_kl_uniform(frame: pd.DataFrame, path: Path) -> Path:
    """KL-to-uniform of the head's singular values over training, every model in one panel."""
    kl = S.select(frame, "kl_uniform", "head", layer=-1)
    if kl.empty:
        raise SkipFigure("no kl_uniform rows of component 'head' at layer -1")
    return _models_over_steps(kl, path, "KL(p ‖ uniform), p = s / Σs (nats)",
                              "Head singular spectrum: KL to uniform over training", lambda m, r: S.short_name(m))


@_figure
def plot_anisotropy_over_steps(frame: pd.DataFrame, path: Path) -> Path:
    """Last-layer anisotropy (final hidden state, else deepest residual stream) over training per model."""
    aniso = S.last_layer_anisotropy(frame)
    if aniso.empty:
        raise SkipFigure("no anisotropy rows of 'final' (layer -1) or of per-layer 'resid'")
    return _models_over_steps(aniso, path, "anisotropy (mean pairwise cosine)",
                              "Last-layer anisotropy on the probe over training",
                              lambda m, r: f"{S.short_name(m)} ({r['source'].iloc[0]})")


@_figure
def plot_anisotropy_by_layer(frame: pd.DataFrame, path: Path, components: Sequence[str] | None = None) -> Path:
    """Anisotropy per layer at each model's first (dotted) and last (solid) measured step."""
    rows = S.select(frame, "anisotropy", per_layer=True)
    comps = S.layer_components(rows, "anisotropy", components)
    if not comps:
        raise SkipFigure("no per-layer anisotropy rows")
    models = S.model_order(rows)
    palette = _model_colors(models)
    first, last = _at_step(rows, "first"), _at_step(rows, "final")
    fig, axes = _panels(len(comps))
    for ax, comp in zip(axes, comps):
        for m in models:
            for part, ls, alpha in ((first, ":", 0.7), (last, "-", 1.0)):
                r = part[(part["model"] == m) & (part["component"] == comp)]
                ax.plot(r["layer"], r["value"], ls=ls, marker="o", ms=3, lw=1.3, alpha=alpha, color=palette[m])
        ax.set_xlabel("layer")
        ax.set_ylabel("anisotropy (mean pairwise cosine)")
        ax.set_title(f"component: {comp}")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles = [Line2D([], [], color=palette[m], marker="o", ms=3) for m in models]
    labels = [S.short_name(m) for m in models]
    handles += [Line2D([], [], color="0.3", ls=":"), Line2D([], [], color="0.3", ls="-")]
    labels += ["first measured step", "last measured step"]
    _legend_outside(fig, handles, labels, below=True)
    fig.suptitle("Anisotropy per layer on the probe")
    return save(fig, path)
