"""Saturation of one series (validation loss, an eval metric) over checkpoints: best, final, gap, onset.

Definitions (Godey et al. 2024 call a model saturated when its held-out performance degrades late in
training; the thresholds below are ours and every one is a parameter):

- Direction: ``higher_is_better`` per metric (``harness.higher_is_better`` guesses from the name; a result
  file's own map or the user overrides it). Below, "worse" and "better" follow it.
- Best checkpoint: the best value among checkpoints at or after ``min_fraction`` (default 0.1) of training
  (step >= min_fraction x final step), so that the noisy first checkpoints cannot be "best". Ties: earliest.
- Final checkpoint: the last step.
- Relative gap: worse / better - 1 of the final value against the best one (>= 0; 0.33 = the final value
  is 33% worse), i.e. final / best - 1 for a lower-is-better metric and best / final - 1 otherwise.
  NaN when a value is not positive (the ratio means nothing there).
- ``saturated``: gap > ``margin`` (default 0.05, relative).
- Onset: where the final degradation begins, robust to single noisy checkpoints. The series is first
  smoothed by a running median of 3 checkpoints (the ends kept as they are), which removes any one-point
  spike or dip; the onset is then the last checkpoint, at or after the best one, whose smoothed value is
  within ``onset_tolerance`` (default margin / 2) of the best value. Past the onset every smoothed value is
  worse than the best by more than the tolerance: the curve has left the best plateau for good. Only
  defined for saturated series (NaN otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

MIN_CHECKPOINTS = 3
MIN_FRACTION = 0.1
MARGIN = 0.05


class SeriesError(ValueError):
    """A series that cannot be analysed (too short, steps repeated, values missing)."""


@dataclass(frozen=True)
class Saturation:
    higher_is_better: bool
    best_step: int
    best_value: float
    final_step: int
    final_value: float
    gap: float
    onset_step: float  # a step, or NaN when not saturated
    saturated: bool
    checkpoints: int

    def as_dict(self) -> dict:
        return asdict(self)


def relative_gap(value: float, best: float, higher_is_better: bool) -> float:
    """worse / better - 1 of ``value`` against ``best`` (positive when ``value`` is worse); NaN if either <= 0."""
    if not (value > 0 and best > 0):
        return math.nan
    return best / value - 1.0 if higher_is_better else value / best - 1.0


def running_median3(values: np.ndarray) -> np.ndarray:
    """Centred running median over 3 points; the first and last values are kept."""
    out = values.astype(float).copy()
    if len(values) >= 3:
        out[1:-1] = np.median(np.stack([values[:-2], values[1:-1], values[2:]]), axis=0)
    return out


def detect(steps: Sequence[int], values: Sequence[float], higher_is_better: bool, min_fraction: float = MIN_FRACTION,
           margin: float = MARGIN, onset_tolerance: float | None = None, what: str = "series") -> Saturation:
    """Saturation fields of one series (see the module docstring for every definition)."""
    steps_a = np.asarray(steps, dtype=np.int64)
    vals = np.asarray(values, dtype=float)
    if len(steps_a) < MIN_CHECKPOINTS:
        raise SeriesError(f"{what}: {len(steps_a)} checkpoint(s); a trend needs at least {MIN_CHECKPOINTS}")
    if not np.isfinite(vals).all():
        raise SeriesError(f"{what}: non-finite values at steps {steps_a[~np.isfinite(vals)].tolist()}")
    order = np.argsort(steps_a, kind="stable")
    steps_a, vals = steps_a[order], vals[order]
    if (np.diff(steps_a) == 0).any():
        raise SeriesError(f"{what}: step {int(steps_a[1:][np.diff(steps_a) == 0][0])} appears twice")
    if not 0 <= min_fraction < 1 or margin < 0:
        raise SeriesError(f"min_fraction must be in [0, 1) and margin >= 0 (got {min_fraction}, {margin})")
    tol = margin / 2 if onset_tolerance is None else onset_tolerance
    loss = -vals if higher_is_better else vals  # lower is better from here on
    final_step = int(steps_a[-1])
    eligible = np.flatnonzero(steps_a >= min_fraction * final_step)
    best_i = int(eligible[np.argmin(loss[eligible])])  # argmin takes the earliest of ties
    gap = relative_gap(vals[-1], vals[best_i], higher_is_better)
    saturated = bool(np.isfinite(gap) and gap > margin)
    onset = math.nan
    if saturated:
        smooth = running_median3(vals)
        within = [i for i in range(best_i, len(vals)) if relative_gap(smooth[i], vals[best_i], higher_is_better) <= tol]
        onset = float(steps_a[within[-1]]) if within else float(steps_a[best_i])
    return Saturation(higher_is_better, int(steps_a[best_i]), float(vals[best_i]), final_step, float(vals[-1]),
                      float(gap), onset, saturated, len(vals))
