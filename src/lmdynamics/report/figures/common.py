"""What every figure shares: the figure wrapper (skip when rows are missing), atomic PNG writing, panels,
axes, colours and names. See ``lmdynamics.report.figures`` for the figures themselves."""

from __future__ import annotations

import functools
import logging
import math
import os
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

from lmdynamics import catalogue, store
from lmdynamics import summaries as S
from lmdynamics.atomic import atomic_path
from lmdynamics.layout import slug as file_slug

log = logging.getLogger(__name__)

DPI = 110


class SkipFigure(Exception):
    """Raised inside a figure function when the table lacks the rows it needs."""


def cka_label(metric: str) -> str:
    """What a CKA metric name means, for titles (says biased or unbiased HSIC): the catalogue's label."""
    return catalogue.label(metric)


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
    """A model's display name usable in a file name."""
    return file_slug(S.short_name(model))


def fmt_count(n: float) -> str:
    """143000 -> '143k', 2097152 -> '2.1M' (for step and token tick labels)."""
    n = float(n)
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            text = f"{n / div:.1f}".removesuffix(".0")
            return f"{text}{suffix}"
    return f"{n:g}"


# ------------------------------------------------------------------------------------------ plumbing
def figure(fn: Callable) -> Callable:
    """Turn ``SkipFigure`` into a None return with the reason logged and handed to ``on_skip``."""

    @functools.wraps(fn)
    def wrapper(frame: pd.DataFrame, path: str | os.PathLike, *args, on_skip: Callable[[str], None] | None = None,
                **kwargs) -> Path | None:
        path = Path(path)
        try:
            return fn(store.normalise(frame), path, *args, **kwargs)
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


def panels(n: int, width: float = 4.6, height: float = 3.4, ncols: int | None = None, extra: float = 1.2):
    """A constrained-layout figure with ``n`` axes in a grid (unused cells removed)."""
    ncols = ncols or (n if n <= 3 else (2 if n == 4 else 3))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols + extra, height * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig, list(axes[:n])


def step_label(rows: pd.DataFrame) -> str:
    """'training step', with the tokens per step when every plotted model trains on the same amount."""
    r = rows[(rows["step"] > 0) & (rows["tokens"] > 0)]
    if not r.empty:
        ratio = (r["tokens"] / r["step"]).to_numpy(float)
        if np.allclose(ratio, ratio[0], rtol=1e-6):
            return f"training step (1 step = {fmt_count(ratio[0])} tokens)"
    return "training step"


def log_steps(ax, rows: pd.DataFrame) -> None:
    """Log-scaled step axis that still shows step 0 (symlog, linear below 1), its ticks in one style: 0, 1, 10,
    100, 1k, ... (matplotlib's symlog labels would mix "0" with "10^0")."""
    ax.set_xscale("symlog", linthresh=1.0, linscale=0.6)
    ax.set_xlim(left=0)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(step_tick_label))
    ax.set_xlabel(step_label(rows))


def step_tick_label(x: float, _pos=None) -> str:
    """A step-axis tick label: plain numbers (0, 1, 10, 100, 1k, 2.5M), never a power-of-ten exponent."""
    return fmt_count(round(x)) if x >= 0 else ""


def model_colors(models: Sequence[str]) -> dict[str, tuple]:
    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(models)}


def layer_colors(n_layers: int):
    """Discrete colour per layer (viridis) and the mappable for a 'layer' colourbar."""
    cmap = matplotlib.colormaps["viridis"].resampled(max(n_layers, 2))
    norm = colors.BoundaryNorm(np.arange(-0.5, n_layers + 0.5), cmap.N)
    return cmap, norm, ScalarMappable(norm=norm, cmap=cmap)


def layer_colorbar(fig: Figure, axes, mappable, n_layers: int) -> None:
    bar = fig.colorbar(mappable, ax=axes, label="layer", shrink=0.9)
    step = max(1, math.ceil(n_layers / 12))
    bar.set_ticks(list(range(0, n_layers, step)))
    bar.minorticks_off()


def pick_model(rows: pd.DataFrame, model: str | None, what: str) -> str:
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


def legend_outside(fig: Figure, handles, labels, below: bool = False) -> None:
    """A figure legend outside the axes (right, or below in columns), so that it never covers data."""
    if not handles:
        return
    if below:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(handles), 4), fontsize=8)
    else:
        fig.legend(handles, labels, loc="outside right upper", fontsize=8)


def layer_axis(ax, ylabel: str, title: str | None = None) -> None:
    """A panel whose x axis is the layer (integer ticks): labels, title and grid."""
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)


def model_handles(models: Sequence[str], palette: dict, ms: float = 4) -> tuple[list, list[str]]:
    """Legend handles and labels, one per model (its colour, a round marker)."""
    from matplotlib.lines import Line2D

    return [Line2D([], [], color=palette[m], marker="o", ms=ms) for m in models], [S.short_name(m) for m in models]


def ov_merged(rows: pd.DataFrame) -> pd.DataFrame:
    """Per-head OV rows averaged into one 'ov' component per (model, layer, step)."""
    merged = rows.assign(component=rows["component"].map(lambda c: "ov" if S.is_head_component(c) else c))
    return merged.groupby(["model", "metric", "component", "layer", "index", "step"], as_index=False).agg(
        tokens=("tokens", "max"), value=("value", "mean"))


def matrix_order(components: Sequence[str]) -> list[str]:
    order = list(S.WEIGHT_MATRICES)
    return sorted(set(components), key=lambda c: (order.index(c) if c in order else len(order), c))


def at_step(rows: pd.DataFrame, step: str | int) -> pd.DataFrame:
    """Rows at each model's last step ("final"), its first ("first"), or at a given step."""
    if step in ("final", "first"):
        pick = rows.groupby("model")["step"].transform("max" if step == "final" else "min")
        return rows[rows["step"] == pick]
    return rows[rows["step"] == int(step)]
