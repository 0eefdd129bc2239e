"""Which series the saturation analysis reads from a tidy table, and whether the head signals moved first.

The head signals (Godey et al. 2024, section 3 of docs/science.md), each in the direction in which it degrades:
- ``kl_uniform`` of component ``head`` (layer -1): KL(s/sum(s) || uniform) of the head's singular values;
  it rises when the spectrum degenerates (treated as lower-is-better);
- ``er`` of component ``head`` (layer -1): the head's effective rank; it falls (higher-is-better);
- ``anisotropy`` of the last layer (``final`` at layer -1, else the deepest ``resid``): it rises
  (lower-is-better).

"Moved first": each signal is run through the same detector as the eval curve (``detect.detect`` with the
same ``min_fraction`` and ``margin``, in the signal's degradation direction). A signal *moved* if it ends
more than ``margin`` (relative) worse than its best value after ``min_fraction`` of training; it *moved
first* if it moved and its onset step is at or before the eval curve's onset step. Undefined (``n/a``)
when the eval series is not saturated; no verdict at all when the table has fewer than 3 finite
checkpoints of the signal.
"""

from __future__ import annotations

import math

import pandas as pd

from lmdynamics.analysis.summaries import last_layer_anisotropy, select

from .detect import MIN_CHECKPOINTS, Saturation, SeriesError, detect

KL_UNIFORM, ER, ANISOTROPY = "kl_uniform", "er", "anisotropy"
HEAD = "head"
# signal -> (label, higher is better in the sense of "not degraded")
SIGNALS = {
    KL_UNIFORM: ("head KL-to-uniform of s/sum(s)", False),
    ER: ("head effective rank", True),
    ANISOTROPY: ("last-layer anisotropy", False),
}


def signal_series(frame: pd.DataFrame, model: str, signal: str) -> pd.DataFrame:
    """Columns step, value (sorted) of one head signal of ``model``; empty when the table lacks it."""
    own = frame[frame["model"] == model]
    if signal == ANISOTROPY:
        rows = last_layer_anisotropy(own)
    else:
        rows = select(own, signal, HEAD, layer=-1)
    return rows[["step", "value"]].sort_values("step", ignore_index=True)


def moved_first(frame: pd.DataFrame, model: str, eval_fields: Saturation, **kwargs) -> dict[str, dict]:
    """Per signal: ``moved`` (bool or None), ``onset_step`` and ``first`` (bool or None: see module docstring)."""
    out = {}
    for signal, (_, up) in SIGNALS.items():
        series = signal_series(frame, model, signal)
        if len(series) < MIN_CHECKPOINTS:
            out[signal] = {"moved": None, "onset_step": math.nan, "first": None, "rows": len(series)}
            continue
        try:
            fields = detect(series.step.to_numpy(), series.value.to_numpy(), up, what=f"{model} {signal}", **kwargs)
        except SeriesError:  # e.g. a NaN value (an all-zero head): no verdict rather than no report
            out[signal] = {"moved": None, "onset_step": math.nan, "first": None, "rows": len(series)}
            continue
        first = None
        if eval_fields.saturated:
            first = bool(fields.saturated and fields.onset_step <= eval_fields.onset_step)
        out[signal] = {"moved": fields.saturated, "onset_step": fields.onset_step, "first": first,
                       "rows": len(series)}
    return out
