"""The head signals of every head kind: a mixture of softmaxes' component heads (``head_cNN``), each judged and
averaged; a plain, tied or low-rank head (``head``) as before."""

import math

import pandas as pd
import pytest

from lmdynamics.saturation.detect import detect
from lmdynamics.saturation.signals import head_components, moved_first, signal_series

STEPS = [100, 200, 300, 400, 500, 600, 700, 800]


def _frame(series: dict[str, list[float]], metric: str = "kl_uniform", model: str = "m") -> pd.DataFrame:
    return pd.DataFrame([{"run": "r", "model": model, "step": s, "tokens": s, "layer": -1, "component": c,
                          "metric": metric, "index": -1, "value": v}
                         for c, values in series.items() for s, v in zip(STEPS, values)])


def test_a_mixture_signal_is_the_mean_of_its_components_and_each_is_judged():
    rising = [0.10, 0.10, 0.10, 0.10, 0.10, 0.20, 0.40, 0.80]  # degrades (KL up) from step 600
    flat = [0.30] * 8
    frame = _frame({"head_c00": rising, "head_c01": flat, "head_c02": flat})
    assert head_components(frame, "m", "kl_uniform") == ["head_c00", "head_c01", "head_c02"]
    mean = signal_series(frame, "m", "kl_uniform")
    assert mean["value"].tolist() == pytest.approx([(a + 2 * b) / 3 for a, b in zip(rising, flat)], abs=1e-12)
    assert signal_series(frame, "m", "kl_uniform", "head_c01")["value"].tolist() == pytest.approx(flat)
    eval_fields = detect(STEPS, [3.0, 2.8, 2.6, 2.5, 2.45, 2.44, 2.6, 2.9], False)  # the loss turns up late
    verdicts = moved_first(frame, "m", eval_fields)
    assert verdicts["kl_uniform"]["moved"] is True  # the mean rises from 0.233 to 0.467
    assert verdicts["kl_uniform[head_c00]"]["moved"] is True and verdicts["kl_uniform[head_c01]"]["moved"] is False
    expected = detect(STEPS, rising, False)
    assert verdicts["kl_uniform[head_c00]"]["onset_step"] == expected.onset_step
    assert verdicts["kl_uniform[head_c00]"]["first"] is bool(expected.onset_step <= eval_fields.onset_step)
    assert verdicts["er"]["moved"] is None and "er[head_c00]" not in verdicts  # no ER rows: no verdict


def test_a_single_head_keeps_its_own_series_and_no_component_verdicts():
    values = [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    frame = _frame({"head": values})
    assert head_components(frame, "m", "kl_uniform") == ["head"]
    assert signal_series(frame, "m", "kl_uniform")["value"].tolist() == pytest.approx(values)
    verdicts = moved_first(frame, "m", detect(STEPS, [3.0, 2.9, 2.8, 2.7, 2.6, 2.5, 2.4, 2.3], False))
    assert verdicts["kl_uniform"]["moved"] is False and not any("[" in k for k in verdicts)
    assert math.isnan(verdicts["kl_uniform"]["onset_step"])
