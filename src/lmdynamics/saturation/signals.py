"""Which series the saturation analysis reads from a tidy table, and whether the head signals moved first.

The head signals (Godey et al. 2024, section 3 of docs/science.md), each in the direction in which it degrades:
- ``kl_uniform`` of the head (layer -1): KL(s/sum(s) || uniform) of the head's singular values;
  it rises when the spectrum degenerates (treated as lower-is-better);
- ``er`` of the head (layer -1): the head's effective rank; it falls (higher-is-better);
- ``anisotropy`` of the last layer (``final`` at layer -1, else the deepest ``resid``): it rises
  (lower-is-better).

The head is component ``head`` for the plain, tied (measured through the input embedding it shares) and
low-rank heads (its W = A B). A mixture of softmaxes has one head per component, ``head_c00``, ``head_c01``, ...:
its head signal is their mean per step, and each component's own series gets a verdict too (signal names
``kl_uniform[head_c00]``, ...; ``head_signals``).

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

from lmdynamics.catalogue import head_series, is_output_head
from lmdynamics.summaries import last_layer_anisotropy, select

from .detect import MIN_CHECKPOINTS, Saturation, SeriesError, detect

KL_UNIFORM, ER, ANISOTROPY = "kl_uniform", "er", "anisotropy"
HEAD = "head"
# signal -> (label, higher is better in the sense of "not degraded")
SIGNALS = {
    KL_UNIFORM: ("head KL-to-uniform of s/sum(s)", False),
    ER: ("head effective rank", True),
    ANISOTROPY: ("last-layer anisotropy", False),
}


def head_components(frame: pd.DataFrame, model: str, signal: str) -> list[str]:
    """The head components of ``model`` with rows of ``signal`` at layer -1: ``["head"]``, or a mixture's
    ``head_c00``, ``head_c01``, ... (sorted); empty when the table has none."""
    rows = frame[(frame["model"] == model) & (frame["metric"] == signal) & (frame["layer"] == -1)]
    components = sorted(c for c in rows["component"].unique() if is_output_head(c))
    return [HEAD] if HEAD in components else components


def signal_series(frame: pd.DataFrame, model: str, signal: str, component: str | None = None) -> pd.DataFrame:
    """Columns step, value (sorted) of one head signal of ``model``: the head's, or the mean over a mixture's
    component heads per step, or with ``component`` that one head's; empty when the table lacks it."""
    own = frame[frame["model"] == model]
    if signal == ANISOTROPY:
        rows = last_layer_anisotropy(own)
    elif component is not None:
        rows = select(own, signal, component, layer=-1)
    else:
        rows = head_series(own, signal)  # a mixture's: the mean over its component heads
    return rows[["step", "value"]].sort_values("step", ignore_index=True)


def head_signals(frame: pd.DataFrame, model: str) -> list[tuple[str, str, str | None]]:
    """``(name, signal, component)`` of every series ``moved_first`` judges: the three signals (a mixture's
    head signals as the mean of its components), then each mixture component's own KL-to-uniform and ER."""
    out = [(signal, signal, None) for signal in SIGNALS]
    for signal in (KL_UNIFORM, ER):
        components = head_components(frame, model, signal)
        if components != [HEAD]:
            out += [(f"{signal}[{c}]", signal, c) for c in components]
    return out


def moved_first(frame: pd.DataFrame, model: str, eval_fields: Saturation, **kwargs) -> dict[str, dict]:
    """Per judged series (``head_signals``): ``moved`` (bool or None), ``onset_step`` and ``first`` (bool or None:
    see the module docstring)."""
    out = {}
    for name, signal, component in head_signals(frame, model):
        up = SIGNALS[signal][1]
        series = signal_series(frame, model, signal, component)
        no_verdict = {"moved": None, "onset_step": math.nan, "first": None}
        if len(series) < MIN_CHECKPOINTS:
            out[name] = no_verdict
            continue
        try:
            fields = detect(series.step.to_numpy(), series.value.to_numpy(), up, what=f"{model} {name}", **kwargs)
        except SeriesError:  # e.g. a NaN value (an all-zero head): no verdict rather than no report
            out[name] = no_verdict
            continue
        first = None
        if eval_fields.saturated:
            first = bool(fields.saturated and fields.onset_step <= eval_fields.onset_step)
        out[name] = {"moved": fields.saturated, "onset_step": fields.onset_step, "first": first}
    return out
