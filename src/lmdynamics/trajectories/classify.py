"""Trend classes of every token's trajectory, per start fraction, and their shares (Xia et al. 2023, sec. 3-4).

A token's trajectory is its perplexity exp(loss) at every checkpoint. For a start fraction p the window runs
from the first checkpoint whose step is >= p x the final step to the final checkpoint (``metrics.trends``);
the default regressor is log(step) (the authors' released code), ``step`` is offered. Shares are counted per
model, start fraction and group (all tokens, a corpus-frequency bucket, or a token class) and sum to 1 in each.

Double descent, two ways (docs/science.md section 4):
- ``group``: the authors' definition: the tokens whose trend is upward in a reference (small) model after 20%
  of training; their group perplexity is then traced across sizes (``compare``).
- ``per-token``: ours (``metrics.trends.double_descent_windows``): significantly down, up, then down again over
  three consecutive windows of the token's own trajectory.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics.trends import (DEFAULT_TRAJECTORY_REGRESSOR, TREND_LABELS, TooFewCheckpoints, classify_trends,
                              double_descent_windows)
from .storage import Trajectories

__all__ = ["START_FRACTIONS", "DOUBLE_DESCENT_FRACTION", "trend_labels", "class_shares", "double_descent_shares"]

START_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
DOUBLE_DESCENT_FRACTION = 0.2  # the authors' group: upward after 20% of training


def perplexities(traj: Trajectories) -> np.ndarray:
    return np.exp(traj.losses.astype(np.float64))


def trend_labels(traj: Trajectories, start_fraction: float, regressor: str = DEFAULT_TRAJECTORY_REGRESSOR,
                 alpha: float = 0.05, variance_condition: bool = False) -> np.ndarray:
    """One label of ``TREND_LABELS`` per stored token."""
    return classify_trends(perplexities(traj), traj.steps, start_fraction, alpha, regressor=regressor,
                           variance_condition=variance_condition).labels


def _shares(labels: np.ndarray, groups: np.ndarray) -> list[dict]:
    rows = []
    for g in sorted(set(groups.tolist())):
        sel = labels[groups == g]
        for lab in TREND_LABELS:
            count = int((sel == lab).sum())
            rows.append({"group": g, "label": lab, "count": count, "share": count / len(sel)})
    return rows


def class_shares(traj: Trajectories, start_fractions=START_FRACTIONS, regressor: str = DEFAULT_TRAJECTORY_REGRESSOR,
                 alpha: float = 0.05, variance_condition: bool = False, breakdowns: dict | None = None) -> pd.DataFrame:
    """Rows (model, start_fraction, breakdown, group, label, count, share); ``breakdowns`` maps a name
    (``frequency``, ``token_class``) to one group value per token; ``all`` is always there."""
    groups = {"all": np.full(traj.losses.shape[0], "all", dtype=object), **(breakdowns or {})}
    rows = []
    for p in start_fractions:
        labels = trend_labels(traj, p, regressor, alpha, variance_condition)
        for name, values in groups.items():
            for r in _shares(labels, np.asarray(values, dtype=object)):
                rows.append({"model": traj.model, "start_fraction": p, "breakdown": name, **r})
    return pd.DataFrame(rows)


def double_descent_shares(traj: Trajectories, regressor: str = DEFAULT_TRAJECTORY_REGRESSOR, alpha: float = 0.05) -> dict:
    """Both double-descent shares of one model: the authors' group (upward after 20%) and our per-token rule
    (NaN when the run has too few checkpoints for its three windows of >= 3 checkpoints each)."""
    group = trend_labels(traj, DOUBLE_DESCENT_FRACTION, regressor, alpha) == "upward"
    try:
        per_token = float(double_descent_windows(perplexities(traj), traj.steps, 0.0, alpha, regressor).mean())
    except TooFewCheckpoints:
        per_token = float("nan")
    return {"model": traj.model, "group_upward_after_20pct": float(group.mean()), "per_token_down_up_down": per_token}
