"""Did an intervention help? Differences of loss to a baseline group with their uncertainty, and group means.

For every group that is not the baseline, the baseline group is the one with the baseline value of the
baseline key and the same values of the remaining grouping keys (a head kind's own parameters, such as ``K``
of a mixture, are part of the intervention, not a remaining key). Per loss (lower is better):

- runs of the two groups with the same seed are paired; with at least 2 pairs the difference is the mean of
  the paired differences with its Student-t interval (t_{0.975, n-1} s / sqrt(n), n pairs);
- otherwise the difference of the group means with Welch's interval (t_{0.975, nu} sqrt(s1^2/n1 + s2^2/n2),
  nu the Welch-Satterthwaite degrees of freedom; Welch 1947).

The word: ``better`` when the whole interval lies below 0, ``worse`` when above, ``no significant difference``
when it holds 0, ``too few runs for an interval`` with fewer than 2 runs (or pairs) on a side.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

CI_LEVEL = 0.95
#: (column of the per-run summary, what it is); lower is better for each.
LOSSES = (("final_val_loss", "final validation loss"), ("best_val_loss", "best validation loss"),
          ("final_excess_loss", "final excess loss"))
VERDICT_COLUMNS = ["group", "baseline", "metric", "difference", "ci_low", "ci_high", "n", "pairing", "verdict"]
MEANS_COLUMNS = ["group", "metric", "mean", "ci_low", "ci_high", "n"]


def t_interval(values) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the Student-t interval at ``CI_LEVEL`` over independent runs (e.g. seeds):
    mean +- t_{(1+level)/2, n-1} s / sqrt(n), s the sample standard deviation; NaN values are left out, and the
    bounds are NaN for fewer than 2 values."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    n = len(v)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if n < 2:
        return mean, math.nan, math.nan, n
    half = float(stats.t.ppf((1 + CI_LEVEL) / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


def welch_interval(a, b) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high): Welch's interval at ``CI_LEVEL``; NaN bounds with fewer than 2 on a side."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) == 0 or len(b) == 0:
        return math.nan, math.nan, math.nan
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    nu = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf((1 + CI_LEVEL) / 2, nu) * se)
    return diff, diff - half, diff + half


def word(low: float, high: float) -> str:
    if math.isnan(low) or math.isnan(high):
        return "too few runs for an interval"
    if high < 0:
        return "better"
    if low > 0:
        return "worse"
    return "no significant difference"


def difference(treated: pd.DataFrame, base: pd.DataFrame, column: str) -> dict:
    """The difference treated - base of ``column`` (frames with columns ``seed`` and ``column``): paired by seed
    with at least 2 common seeds, else Welch."""
    t = treated.dropna(subset=[column]).groupby("seed")[column].mean()
    b = base.dropna(subset=[column]).groupby("seed")[column].mean()
    common = sorted(set(t.index) & set(b.index), key=str)
    if len(common) >= 2:
        mean, low, high, n = t_interval(t[common].to_numpy() - b[common].to_numpy())
        return {"difference": mean, "ci_low": low, "ci_high": high, "n": f"{n} pairs", "pairing": "by seed"}
    diff, low, high = welch_interval(treated[column], base[column])
    n_t, n_b = int(treated[column].notna().sum()), int(base[column].notna().sum())
    return {"difference": diff, "ci_low": low, "ci_high": high, "n": f"{n_t} vs {n_b}", "pairing": "unpaired (Welch)"}


def remaining_keys(keys: list[str], base_key: str) -> list[str]:
    """The grouping keys a group and its baseline share: all but the baseline key (and, for a ``kind``, the
    parameters of that kind, which belong to the intervention)."""
    parent, _, leaf = base_key.rpartition(".")
    return [k for k in keys if k != base_key and not (leaf == "kind" and k.rpartition(".")[0] == parent)]


def verdict_table(summary: pd.DataFrame, groups: dict, keys: list[str], base_key: str, base_value: str) -> pd.DataFrame:
    """One row per (non-baseline group, loss): difference to its baseline group, interval, n, pairing, verdict.
    ``summary``: per run ``group`` (label), ``seed`` and the loss columns; ``groups``: label -> ``grouping.Group``."""
    from .grouping import natural

    rest = remaining_keys(keys, base_key)
    bases = {g: grp for g, grp in groups.items() if grp.value(base_key) == base_value}
    losses = [(c, what) for c, what in LOSSES if c in summary and summary[c].notna().any()]
    out = []
    for g in sorted(groups, key=natural):
        if g in bases:
            continue
        match = [b for b, grp in bases.items() if all(grp.value(k) == groups[g].value(k) for k in rest)]
        if not match:
            out.append({"group": g, "baseline": "", "metric": "", "verdict": "no baseline run at the same "
                        + (", ".join(rest) or "keys")})
            continue
        base = match[0]
        for column, what in losses:
            d = difference(summary[summary["group"] == g], summary[summary["group"] == base], column)
            out.append({"group": g, "baseline": base, "metric": what, **d, "verdict": word(d["ci_low"], d["ci_high"])})
    return pd.DataFrame(out, columns=VERDICT_COLUMNS)


def means_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per group and loss: the mean over the group's runs with its t-interval."""
    from .grouping import natural

    out = []
    for g in sorted(summary["group"].unique(), key=natural):
        rows = summary[summary["group"] == g]
        for column, what in LOSSES:
            if column in rows and rows[column].notna().any():
                mean, low, high, n = t_interval(rows[column])
                out.append({"group": g, "metric": what, "mean": mean, "ci_low": low, "ci_high": high, "n": n})
    return pd.DataFrame(out, columns=MEANS_COLUMNS)
