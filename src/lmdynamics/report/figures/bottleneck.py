"""Figures of the softmax bottleneck: the W-error curve of a corpus's next-token matrix (``saturation.werror``)
and the loss of rank-constrained heads on a frozen backbone (``saturation.lowrank_head``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from lmdynamics.report.figures.common import save


def plot_werror(curve: dict[int, float], path, hidden_sizes: dict[str, int] | None = None, title: str = ""):
    """W-error vs d (log d), with each model's hidden size marked."""
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    dims = [d for d in curve if d > 0]
    ax.plot(dims, [curve[d] for d in dims], marker="o", ms=3)
    for i, (model, d) in enumerate(sorted((hidden_sizes or {}).items(), key=lambda kv: kv[1])):
        ax.axvline(d, color=f"C{i + 1}", ls="--", lw=1, label=f"{model} (d = {d})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("rank d of the approximation")
    ax.set_ylabel("W-error(d) = ||s_{d+1:}|| / ||s||")
    ax.set_ylim(0, 1.02)
    ax.set_title(title or "W-error of the empirical next-token matrix")
    if hidden_sizes:
        ax.legend(fontsize=7)
    return save(fig, path)


def plot_lowrank_head(result: dict, path, title: str = ""):
    """Loss vs r (log r) with the full-rank head as a horizontal reference line."""
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.subplots()
    ranks = sorted(result["ranks"])
    ax.plot(ranks, [result["ranks"][r] for r in ranks], marker="o", label="head W = A B, rank r (trained)")
    ax.axhline(result["full"], color="k", ls="--", lw=1, label="the checkpoint's full-rank head")
    if "full_trained" in result:
        ax.axhline(result["full_trained"], color="C3", ls=":", lw=1, label="full-rank head trained the same way")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("rank r of the head")
    ax.set_ylabel("evaluation loss (nats/token)")
    ax.set_title(title or "rank-constrained head")
    ax.legend(fontsize=8)
    return save(fig, path)


def draw_werror(csv_path: Path, hidden_sizes: dict[str, int] | None = None) -> Path:
    """``figures/werror.png`` beside ``werror.csv`` (``saturation.werror.write``), titled with its n-gram matrix."""
    frame = pd.read_csv(csv_path)
    first = frame.iloc[0]
    title = (f"W-error of {int(first['n'])}-gram contexts (min_count {int(first['min_count'])}): "
             f"{int(first['contexts']):,} x {int(first['vocab']):,}")
    curve = dict(zip(frame["d"].astype(int), frame["w_error"].astype(float)))
    return plot_werror(curve, Path(csv_path).parent / "figures" / "werror.png", hidden_sizes, title)


def draw_lowrank_head(csv_path: Path, result: dict) -> Path:
    """``figures/lowrank_head.png`` beside ``lowrank_head.csv`` (``saturation.lowrank_head.run``)."""
    first = pd.read_csv(csv_path).iloc[0]
    title = f"{Path(str(first['checkpoint'])).name}: head W = A B on {int(first['train_tokens']):,} tokens"
    return plot_lowrank_head(result, Path(csv_path).parent / "figures" / "lowrank_head.png", title)
