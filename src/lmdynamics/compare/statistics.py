"""Statistics across the runs' groups: convergence fractions per group with t-intervals, the trend per doubling
of a numeric grouping key, CKA-to-final at fixed fractions of training, group means."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lmdynamics.compare.grouping import natural
from lmdynamics.compare.verdict import CI_LEVEL, t_interval

def convergence_by_group(conv: pd.DataFrame, groups: dict[str, str]) -> pd.DataFrame:
    """Per group and layer: the runs' convergence fractions as mean and t-interval (``t_interval``)."""
    out = []
    for (group, layer), rows in conv.assign(group=conv["run"].map(groups)).groupby(["group", "layer"]):
        mean, low, high, n = t_interval(rows["fraction"])
        out.append({"group": group, "layer": int(layer), "runs": n, "mean": mean, "ci_low": low, "ci_high": high})
    return pd.DataFrame(out, columns=["group", "layer", "runs", "mean", "ci_low", "ci_high"])


def numeric_groups(values: dict[str, object]) -> dict[str, float] | None:
    """Per run, its value of the one grouping key as a positive number (e.g. the hidden size), else None."""
    try:
        numbers = {run: float(v) for run, v in values.items()}
    except (TypeError, ValueError):
        return None
    return numbers if all(v > 0 for v in numbers.values()) and len(set(numbers.values())) > 1 else None


def trend_per_doubling(conv: pd.DataFrame, values: dict[str, float]) -> pd.DataFrame:
    """Per layer: the least-squares slope of the convergence fraction against log2 of the group value over all runs
    (the change in fraction per doubling, e.g. of the hidden size) with its t-interval at ``CI_LEVEL``:
    slope +- t_{(1+level)/2, n-2} sqrt(SSR / (n - 2) / Sxx) (ordinary least squares; each run one observation).
    A negative slope: the larger groups converge earlier."""
    from scipy import stats

    out = []
    for layer, rows in conv.dropna(subset=["fraction"]).groupby("layer"):
        x, y = np.log2(rows["run"].map(values).to_numpy(float)), rows["fraction"].to_numpy(float)
        n, sxx = len(x), float(((x - x.mean()) ** 2).sum())
        if n < 3 or sxx == 0:
            continue
        slope = float(((x - x.mean()) * (y - y.mean())).sum() / sxx)
        residual = y - y.mean() - slope * (x - x.mean())
        half = float(stats.t.ppf((1 + CI_LEVEL) / 2, n - 2) * math.sqrt((residual ** 2).sum() / (n - 2) / sxx))
        out.append({"layer": int(layer), "runs": n, "slope_per_doubling": slope, "ci_low": slope - half, "ci_high": slope + half})
    return pd.DataFrame(out, columns=["layer", "runs", "slope_per_doubling", "ci_low", "ci_high"])


def cka_at_fractions(curves: pd.DataFrame, groups: dict[str, str], points=(0.1, 0.25, 0.5, 0.75, 0.9)) -> pd.DataFrame:
    """Per group and fraction of training: CKA-to-final averaged over layers at each run's measurement nearest that
    fraction, as mean and t-interval over the group's runs."""
    out = []
    for point in points:
        per_run = {}
        for run, rows in curves.groupby("run"):
            fractions = np.sort(rows["fraction"].unique())
            nearest = fractions[np.argmin(np.abs(fractions - point))]
            per_run[run] = float(rows.loc[rows["fraction"] == nearest, "value"].mean())
        for group in sorted({groups[r] for r in per_run}, key=natural):
            mean, low, high, n = t_interval([v for r, v in per_run.items() if groups[r] == group])
            out.append({"group": group, "fraction": point, "runs": n, "mean": mean, "ci_low": low, "ci_high": high})
    return pd.DataFrame(out, columns=["group", "fraction", "runs", "mean", "ci_low", "ci_high"])


def group_stats(summary: pd.DataFrame) -> pd.DataFrame:
    """Per group: runs, and mean / standard deviation of the final numbers."""
    cols = [c for c in ("final_val_loss", "best_val_loss", "final_excess_loss", "final_head_er", "final_head_kl_uniform") if c in summary]
    agg = summary.groupby("group")[cols].agg(["mean", "std"])
    agg.columns = [f"{c}_{s}" for c, s in agg.columns]
    agg.insert(0, "runs", summary.groupby("group").size())
    agg = agg.reset_index()
    return agg.iloc[sorted(range(len(agg)), key=lambda i: natural(str(agg["group"].iloc[i])))]
