"""Trend classes of per-token trajectories (Xia et al. 2023, "Training Trajectories of Language Models
Across Scales", sec. 3): upward / downward / stagnated / other, and double descent.

From the first checkpoint j at or after ``start_fraction`` of training to the end, fit
v_i / v_j = a + b (step_i - step_j) by ordinary least squares and test b = 0 with the t statistic
b / se(b), n - 2 degrees of freedom, two-sided:
- "upward" (forgetting): b > 0 and p < alpha;  "downward" (still learning): b < 0 and p < alpha;
- "stagnated": neither, and the window's first and last values both lie within ``band`` times the
  window's geometric mean;
- "other": the rest.
The paper uses perplexities (positive); pass exp(loss) for losses. The test on the slope does not depend
on dividing by v_j or on the step units; the band does not depend on the units of v.

Regressor: ``regressor="step"`` fits on step_i - step_j (the paper's text); ``"log_step"`` fits on
log(step_i) (the authors' released analysis code, xiamengzhou/training_trajectory_analysis: statsmodels OLS
with an intercept): the one default of the project (``DEFAULT_TRAJECTORY_REGRESSOR``), here, in the trajectory
commands and in their reports. On the log axis the window's steps must be positive (a window starting at a
fraction > 0 of training always is); pass ``regressor="step"`` for a window that starts at step 0.

Their code also asks, for "stagnated", that var(window) < m (the window's geometric mean). Those are different
units (perplexity squared against perplexity), so the condition's strength depends on the perplexity's scale:
it is offered as ``variance_condition=True``, off by default.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats

__all__ = ["TrendClassification", "classify_trend", "classify_trends", "double_descent", "double_descent_windows",
           "window_start", "TREND_LABELS", "REGRESSORS", "DEFAULT_TRAJECTORY_REGRESSOR"]

TREND_LABELS = ("upward", "downward", "stagnated", "other")
REGRESSORS = ("step", "log_step")
DEFAULT_TRAJECTORY_REGRESSOR = "log_step"


class TrendClassification(NamedTuple):
    """Per-trajectory results: labels (str array), OLS slope b (per step, of v / v_start), its two-sided
    p-value, and the index of the first checkpoint of the fitted window."""

    labels: np.ndarray
    slope: np.ndarray
    p_value: np.ndarray
    start: int


def _array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _trajectories(values, steps, caller: str) -> tuple[np.ndarray, np.ndarray]:
    """values as (N, T) and steps as (T,), float64, or a ValueError naming the caller."""
    v = _array(values)
    st = _array(steps)
    if v.ndim == 1:
        v = v[None]
    if v.ndim != 2 or st.ndim != 1 or v.shape[1] != st.shape[0]:
        raise ValueError(f"{caller}: values must be (N, T) and steps (T,), got {v.shape} and {st.shape}")
    return v, st


def window_start(steps, start_fraction: float) -> int:
    """Index of the first checkpoint whose step is >= start_fraction x the last step (the end of training)."""
    st = np.asarray(steps, dtype=np.float64)
    return int(np.argmax(st >= start_fraction * st[-1]))


def classify_trends(values, steps, start_fraction: float = 0.1, alpha: float = 0.05, band=(0.95, 1.05),
                    regressor: str = DEFAULT_TRAJECTORY_REGRESSOR, variance_condition: bool = False) -> TrendClassification:
    """Classify many trajectories at once: values (N, T) positive, steps (T,) increasing.

    The window starts at the first checkpoint whose step is >= start_fraction * steps[-1] (the last
    checkpoint is taken as the end of training) and needs at least 3 checkpoints.
    """
    v, st = _trajectories(values, steps, "classify_trends")
    if not 0 <= start_fraction < 1:
        raise ValueError(f"classify_trends: start_fraction must be in [0, 1), got {start_fraction}")
    if np.any(np.diff(st) <= 0):
        raise ValueError("classify_trends: steps must be strictly increasing (one value per checkpoint, in order)")
    if not np.all(v > 0):
        raise ValueError("classify_trends: values must be positive (perplexities); pass exp(loss) for losses")
    if regressor not in REGRESSORS:
        raise ValueError(f"classify_trends: regressor must be one of {REGRESSORS}, got {regressor!r}")
    lo, hi = band
    start = window_start(st, start_fraction)
    if regressor == "log_step":
        if st[start] <= 0:
            raise ValueError(f"classify_trends: the log(step) regressor needs positive steps, the window starts at step {st[start]:g}; raise start_fraction")
        x = np.log(st[start:])
    else:
        x = st[start:] - st[start]
    y = v[:, start:] / v[:, start : start + 1]
    t = x.shape[0]
    if t < 3:
        raise ValueError(
            f"classify_trends: only {t} checkpoint(s) from step {st[start]:g} on; the slope test needs >= 3 "
            "(lower start_fraction or add checkpoints)"
        )
    xc = x - x.mean()
    sxx = xc @ xc
    yc = y - y.mean(1, keepdims=True)
    slope = yc @ xc / sxx
    resid = yc - slope[:, None] * xc
    dof = t - 2
    se = np.sqrt((resid * resid).sum(1) / dof / sxx)
    with np.errstate(divide="ignore", invalid="ignore"):
        tstat = slope / se
    p = 2 * stats.t.sf(np.abs(tstat), dof)
    p = np.where(se == 0, np.where(slope == 0, 1.0, 0.0), p)  # a perfect line: certain unless flat
    w = v[:, start:]
    gmean = np.exp(np.log(w).mean(1))
    first, last = w[:, 0] / gmean, w[:, -1] / gmean
    in_band = (first >= lo) & (first <= hi) & (last >= lo) & (last <= hi)
    sig = p < alpha
    labels = np.full(v.shape[0], "other", dtype=object)
    stagnant = in_band & ~sig
    if variance_condition:
        stagnant &= w.var(1) < gmean
    labels[stagnant] = "stagnated"
    labels[sig & (slope > 0)] = "upward"
    labels[sig & (slope < 0)] = "downward"
    return TrendClassification(labels, slope, p, start)


def classify_trend(values, steps, start_fraction: float = 0.1, alpha: float = 0.05, band=(0.95, 1.05),
                   regressor: str = DEFAULT_TRAJECTORY_REGRESSOR, variance_condition: bool = False) -> str:
    """Label of one trajectory values (T,) over steps (T,): "upward", "downward", "stagnated" or "other"."""
    v = _array(values)
    if v.ndim != 1:
        raise ValueError(f"classify_trend takes one trajectory (T,), got shape {v.shape}; use classify_trends")
    return str(classify_trends(v[None], steps, start_fraction, alpha, band, regressor, variance_condition).labels[0])


def double_descent(values, rise: float = 0.05):
    """Whether a trajectory goes up and then down again: some checkpoint k has v_k >= (1 + rise) * min(v before k)
    and v_k >= (1 + rise) * min(v after k). values (T,) -> bool; (N, T) -> bool array.

    Xia et al. (2023) report the share of such tokens (~9.4%) without a numeric rule; ``rise`` is ours.
    """
    v = _array(values)
    single = v.ndim == 1
    if single:
        v = v[None]
    if v.ndim != 2:
        raise ValueError(f"double_descent: values must be (T,) or (N, T), got shape {v.shape}")
    if v.shape[1] < 3:
        out = np.zeros(v.shape[0], dtype=bool)
        return bool(out[0]) if single else out
    before = np.minimum.accumulate(v, axis=1)[:, :-2]  # min(v_0..v_{k-1}) for k = 1..T-2
    after = np.minimum.accumulate(v[:, ::-1], axis=1)[:, ::-1][:, 2:]  # min(v_{k+1}..) for k = 1..T-2
    peak = v[:, 1:-1]
    out = ((peak >= (1 + rise) * before) & (peak >= (1 + rise) * after)).any(1)
    return bool(out[0]) if single else out


class TooFewCheckpoints(ValueError):
    """A window of the trajectory holds fewer checkpoints than its slope test needs."""


def double_descent_windows(values, steps, start_fraction: float = 0.0, alpha: float = 0.05,
                           regressor: str = DEFAULT_TRAJECTORY_REGRESSOR, splits=None) -> np.ndarray:
    """Per-token double descent (our rule; the paper's code has none): significantly down, then significantly up,
    then significantly down again, over three consecutive windows of the trajectory.

    The checkpoints from ``start_fraction`` of training on are cut into three windows that share their boundary
    checkpoints; ``splits`` (two fractions of the final step, e.g. (0.2, 0.5)) places the cuts at the first
    checkpoint at or after each, default: thirds of that checkpoint list by count (so with Pythia's log-spaced
    start each window holds as many checkpoints). Each window gets the slope test of ``classify_trends``
    (same ``alpha`` and ``regressor``) and needs >= 3 checkpoints. values (N, T) positive -> bool (N,).
    """
    v, st = _trajectories(values, steps, "double_descent_windows")
    first = window_start(st, start_fraction)
    if regressor == "log_step" and st[first] <= 0:
        first += 1  # step 0 has no log: the first window starts at the first positive step
    idx = np.arange(first, len(st))
    if splits is None:
        cuts = [idx[round(k * (len(idx) - 1) / 3)] for k in (1, 2)]
    else:
        a, b = splits
        if not start_fraction <= a < b < 1:
            raise ValueError(f"double_descent_windows: splits must satisfy start_fraction <= a < b < 1, got {splits}")
        cuts = [window_start(st, a), window_start(st, b)]
    bounds = [(first, cuts[0]), (cuts[0], cuts[1]), (cuts[1], len(st) - 1)]
    for lo, hi in bounds:
        if hi - lo + 1 < 3:
            raise TooFewCheckpoints(
                f"double_descent_windows: a window of only {max(0, hi - lo + 1)} checkpoint(s) (steps {st[lo]:g}..{st[hi]:g}); "
                "each of the three windows needs >= 3: add checkpoints or move the splits")
    want = ("downward", "upward", "downward")
    out = np.ones(v.shape[0], dtype=bool)
    for (lo, hi), label in zip(bounds, want):
        part = classify_trends(v[:, lo: hi + 1], st[lo: hi + 1], 0.0, alpha, regressor=regressor)
        out &= part.labels == label
    return out
