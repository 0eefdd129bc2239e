"""Across sizes at equal perplexity (Xia et al. 2023, sec. 4): group perplexity of a reference model's trend
classes traced over every model's checkpoints, on a switchable x-axis, and how much the curves overlap.

Group perplexity of a token set at a checkpoint: exp(-mean log-likelihood) = exp(mean loss) over the set
(a token-weighted corpus perplexity, never a mean of per-token perplexities).

x-axes: ``step``, ``tokens`` (seen by the checkpoint), ``flops`` = 6 N T (N: parameters without the input
embedding, as the training's model_tflops; T: tokens; Kaplan et al. 2020) and ``val_ppl`` (the checkpoint's
validation perplexity).

Overlap: for a group, each model's log group perplexity is interpolated (linearly in log x, checkpoints sorted
by x) onto 50 points spread evenly in log x over the range every model covers; the spread is the standard
deviation across models at a point, averaged over the points. A spread at equal validation perplexity well
below the spread at equal step is the paper's finding ("curves overlap").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .storage import Trajectories

__all__ = ["AXES", "x_values", "group_perplexity", "trace_groups", "spread", "overlap_table", "check_same_tokens"]

AXES = ("step", "tokens", "flops", "val_ppl")
AXIS_LABELS = {"step": "step", "tokens": "tokens seen", "flops": "training FLOPs (6 N T)", "val_ppl": "validation perplexity"}


def check_same_tokens(trajs: list[Trajectories]) -> None:
    fps = {t.model: t.token_table.fingerprint() for t in trajs}
    if len(set(fps.values())) > 1:
        raise ValueError(f"the models were recorded on different evaluation tokens ({fps}); record them on one text with one tokenizer")


def x_values(traj: Trajectories, axis: str) -> np.ndarray:
    if axis == "step":
        return traj.steps.astype(np.float64)
    if axis == "tokens":
        return traj.tokens.astype(np.float64)
    if axis == "flops":
        return 6.0 * float(traj.meta["parameters"]) * traj.tokens.astype(np.float64)
    if axis == "val_ppl":
        return traj.val_ppl.astype(np.float64)
    raise ValueError(f"unknown x-axis {axis!r}; choose from {', '.join(AXES)}")


def group_perplexity(losses: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """exp(mean loss) over the tokens in ``mask``, at every checkpoint: (N, C), (N,) bool -> (C,)."""
    if not mask.any():
        return np.full(losses.shape[1], np.nan)
    return np.exp(losses[mask].astype(np.float64).mean(0))


def trace_groups(trajs: list[Trajectories], groups: dict[str, np.ndarray]) -> pd.DataFrame:
    """Rows (model, step, tokens, flops, val_ppl, group, group_ppl, n_tokens) for every model and checkpoint."""
    check_same_tokens(trajs)
    rows = []
    for t in trajs:
        cols = {a: x_values(t, a) for a in AXES}
        for name, mask in groups.items():
            g = group_perplexity(t.losses, mask)
            for j in range(len(t.steps)):
                rows.append({"model": t.model, **{a: cols[a][j] for a in AXES}, "group": name,
                             "group_ppl": g[j], "n_tokens": int(mask.sum())})
    return pd.DataFrame(rows)


def spread(frame: pd.DataFrame, group: str, axis: str, points: int = 50) -> float:
    """Mean over the common log-x range of the across-model std of log group perplexity (NaN if < 2 models
    or no common range)."""
    rows = frame[(frame["group"] == group) & (frame[axis] > 0) & np.isfinite(frame["group_ppl"])]
    curves = []
    for _, r in rows.groupby("model"):
        r = r.sort_values(axis)
        curves.append((np.log(r[axis].to_numpy()), np.log(r["group_ppl"].to_numpy())))
    if len(curves) < 2:
        return float("nan")
    lo, hi = max(c[0].min() for c in curves), min(c[0].max() for c in curves)
    if not hi > lo:
        return float("nan")
    grid = np.linspace(lo, hi, points)
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    return float(ys.std(0).mean())


def overlap_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per group: the spread on every axis and the ratio at equal perplexity over at equal step."""
    rows = []
    for g in frame["group"].unique():
        r = {"group": g, **{f"spread_{a}": spread(frame, g, a) for a in AXES}}
        r["ratio_val_ppl_over_step"] = r["spread_val_ppl"] / r["spread_step"] if r["spread_step"] else float("nan")
        rows.append(r)
    return pd.DataFrame(rows)
