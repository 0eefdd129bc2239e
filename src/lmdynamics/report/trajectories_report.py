"""The trajectory report: class shares (per size, start fraction, frequency bucket, token class), both
double-descent shares, group perplexity of the reference model's trend classes over every model's checkpoints
on each x-axis, and the overlap measure. Everything is computed before the first file is written; each file
is written atomically. Figures use matplotlib's Agg canvas (``lmdynamics.report.figures.save``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from lmdynamics.report.figures.common import save
from lmdynamics.atomic import write_text_atomic
from lmdynamics.metrics.trends import DEFAULT_TRAJECTORY_REGRESSOR, TREND_LABELS
from lmdynamics.trajectories.classify import START_FRACTIONS, class_shares, double_descent_shares, trend_labels
from lmdynamics.trajectories.compare import AXES, AXIS_LABELS, overlap_table, trace_groups
from lmdynamics.trajectories.storage import Trajectories

__all__ = ["TrajectoryReport", "build_report", "write_report"]


class TrajectoryReport:
    def __init__(self, shares, double_descent, traced, overlap, reference, start_fraction, regressor):
        self.shares, self.double_descent, self.traced, self.overlap = shares, double_descent, traced, overlap
        self.reference, self.start_fraction, self.regressor = reference, start_fraction, regressor


def build_report(trajs: list[Trajectories], reference: str, start_fraction: float = 0.2,
                 regressor: str = DEFAULT_TRAJECTORY_REGRESSOR, breakdowns: dict | None = None,
                 start_fractions=START_FRACTIONS, variance_condition: bool = False) -> TrajectoryReport:
    """All numbers of the report. ``reference``: the model whose trend classes (at ``start_fraction``) define
    the token groups traced across sizes (the paper: the smallest)."""
    by_name = {t.model: t for t in trajs}
    if reference not in by_name:
        raise ValueError(f"reference model {reference!r} is not among the recorded models {sorted(by_name)}")
    shares = pd.concat([class_shares(t, start_fractions, regressor, breakdowns=breakdowns,
                                     variance_condition=variance_condition) for t in trajs], ignore_index=True)
    dd = pd.DataFrame([double_descent_shares(t, regressor) for t in trajs])
    labels = trend_labels(by_name[reference], start_fraction, regressor, variance_condition=variance_condition)
    groups = {"all": np.ones(len(labels), dtype=bool), **{lab: labels == lab for lab in TREND_LABELS}}
    traced = trace_groups(trajs, groups)
    return TrajectoryReport(shares, dd, traced, overlap_table(traced), reference, start_fraction, regressor)


def _plot_groups(traced: pd.DataFrame, axis: str, path: Path, reference: str, start_fraction: float) -> Path:
    groups = [g for g in ["all", *TREND_LABELS] if (traced["group"] == g).any() and traced.loc[traced["group"] == g, "n_tokens"].iloc[0] > 0]
    fig = Figure(figsize=(4.2 * len(groups), 3.6), layout="constrained")
    axes = fig.subplots(1, len(groups), squeeze=False).ravel()
    for ax, g in zip(axes, groups):
        rows = traced[(traced["group"] == g) & (traced[axis] > 0)]
        for model, r in rows.groupby("model", sort=True):
            r = r.sort_values("step")
            ax.plot(r[axis], r["group_ppl"], marker=".", label=model)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        if axis == "val_ppl":
            ax.invert_xaxis()  # training runs left to right
        ax.set_title(f"{g} ({int(rows['n_tokens'].iloc[0]) if len(rows) else 0} tokens)")
        ax.set_xlabel(AXIS_LABELS[axis])
    axes[0].set_ylabel("group perplexity")
    axes[-1].legend(fontsize=7)
    fig.suptitle(f"tokens grouped by their trend in {reference} after {start_fraction:.0%} of training")
    return save(fig, path)


def _plot_shares(shares: pd.DataFrame, path: Path) -> Path:
    rows = shares[shares["breakdown"] == "all"]
    models = sorted(rows["model"].unique())
    fig = Figure(figsize=(4.2 * len(models), 3.6), layout="constrained")
    axes = fig.subplots(1, len(models), squeeze=False).ravel()
    for ax, model in zip(axes, models):
        r = rows[rows["model"] == model]
        bottom = np.zeros(len(r["start_fraction"].unique()))
        fractions = sorted(r["start_fraction"].unique())
        for lab in TREND_LABELS:
            vals = np.array([r[(r["start_fraction"] == f) & (r["label"] == lab)]["share"].sum() for f in fractions])
            ax.bar([f"{f:.0%}" for f in fractions], vals, bottom=bottom, label=lab)
            bottom += vals
        ax.set_title(model)
        ax.set_xlabel("window start (fraction of training)")
    axes[0].set_ylabel("share of tokens")
    axes[-1].legend(fontsize=7)
    return save(fig, path)


def _table(frame: pd.DataFrame, floatfmt: str = "{:.4g}") -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in frame.iterrows():
        lines.append("| " + " | ".join(floatfmt.format(v) if isinstance(v, float) else str(v) for v in r) + " |")
    return "\n".join(lines)


def _breakdown_sections(report: TrajectoryReport) -> list[str]:
    """Per-breakdown share tables at the report's start fraction."""
    out = []
    at = report.shares[np.isclose(report.shares["start_fraction"], report.start_fraction)]
    for name in sorted(set(at["breakdown"]) - {"all"}):
        rows = at[at["breakdown"] == name]
        table = rows.pivot_table(index=["model", "group"], columns="label", values="share").reset_index()
        counts = rows.groupby(["model", "group"])["count"].sum().reset_index(name="tokens")
        out += [f"### By {name} (window from {report.start_fraction:.0%})", "", _table(table.merge(counts)), ""]
    return out


def write_report(report: TrajectoryReport, out: str | os.PathLike) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in (("shares.csv", report.shares), ("double_descent.csv", report.double_descent),
                        ("group_perplexity.csv", report.traced), ("overlap.csv", report.overlap)):
        write_text_atomic(out / name, frame.to_csv(index=False))
    figures = [_plot_shares(report.shares, out / "class_shares.png")]
    figures += [_plot_groups(report.traced, a, out / f"group_ppl_vs_{a}.png", report.reference, report.start_fraction) for a in AXES]
    every = report.shares[report.shares["breakdown"] == "all"].pivot_table(index=["model", "start_fraction"], columns="label", values="share").reset_index()
    text = [
        "# Per-token training trajectories",
        "",
        f"Regressor: `{report.regressor}` (OLS of ppl_k / ppl_start on it, two-sided p < 0.05 on the slope). "
        f"Windows start at the first checkpoint at or after the given fraction of the final step.",
        "",
        "## Trend shares per model and start fraction (all tokens)",
        "",
        _table(every),
        "",
        *_breakdown_sections(report),
        "All start fractions and breakdowns: `shares.csv`.",
        "",
        "## Double descent",
        "",
        "`group_upward_after_20pct`: the authors' definition (share of tokens with an upward trend after 20% of "
        "training). `per_token_down_up_down`: ours (significantly down, up, down over three windows).",
        "",
        _table(report.double_descent),
        "",
        f"## Group perplexity across sizes (groups: trend classes of {report.reference} at {report.start_fraction:.0%})",
        "",
        "Spread = mean over a common log-x range of the across-model standard deviation of log group perplexity. "
        "A ratio `spread_val_ppl / spread_step` below 1: the sizes' curves agree better at equal validation "
        "perplexity than at equal step.",
        "",
        _table(report.overlap),
        "",
        *[f"![{p.stem}]({p.name})" for p in figures],
        "",
    ]
    return write_text_atomic(out / "report.md", "\n".join(text))
