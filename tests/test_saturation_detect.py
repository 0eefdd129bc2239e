"""Saturation fields on series with known answers."""

import math

import numpy as np
import pytest

from lmdynamics.saturation.detect import SeriesError, detect, running_median3

STEPS = np.array([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512] + list(range(1000, 144000, 6000)))


def test_monotone_series_are_not_saturated():
    loss = 2.0 + 8.0 / (1 + STEPS / 100.0)
    s = detect(STEPS, loss, higher_is_better=False)
    assert (s.best_step, s.final_step, s.gap, s.saturated) == (STEPS[-1], STEPS[-1], 0.0, False)
    assert math.isnan(s.onset_step)
    acc = 0.6 - 0.5 / (1 + STEPS / 100.0)
    s = detect(STEPS, acc, higher_is_better=True)
    assert s.best_step == STEPS[-1] and s.gap == 0.0 and not s.saturated


@pytest.mark.parametrize("higher", [False, True])
def test_planted_rise_gives_best_gap_and_onset(higher):
    k = 61000  # degradation starts here: flat before (after an early fall), linear 0 -> 30% worse after
    base = 20.0
    worse = np.where(STEPS > k, 0.3 * (STEPS - k) / (STEPS[-1] - k), 0.0)
    early = np.where(STEPS < 10000, 5.0 * (1 - STEPS / 10000), 0.0)
    ppl = base * (1 + worse) + early
    values = 1.0 / ppl if higher else ppl  # an accuracy-like series that falls as ppl rises
    s = detect(STEPS, values, higher_is_better=higher)
    plateau = STEPS[(STEPS >= 0.1 * STEPS[-1]) & (STEPS <= k)]  # min_fraction 0.1 of training
    assert s.best_step == plateau[0] and s.best_value == pytest.approx(values[STEPS == plateau[0]][0])
    assert s.final_step == STEPS[-1] and s.gap == pytest.approx(0.3, rel=1e-12) and s.saturated
    first_beyond = STEPS[worse > 0.025][0]  # default tolerance: margin / 2
    assert k <= s.onset_step < first_beyond


def test_onset_ignores_a_single_spike_and_min_fraction_excludes_lucky_first_checkpoints():
    steps = np.arange(0, 21) * 1000
    loss = np.full(21, 3.0)
    loss[5] = 3.9  # one bad checkpoint on the plateau
    loss[15:] = 3.0 * np.linspace(1.05, 1.3, 6)  # lasting rise from step 15000
    loss[0] = 1.0  # a lucky (or buggy) first value before min_fraction of training
    s = detect(steps, loss, higher_is_better=False)
    assert s.best_step == 2000 and s.best_value == 3.0  # step 0 is before 10% of training
    assert s.saturated and s.onset_step == 14000
    assert detect(steps, loss, higher_is_better=False, min_fraction=0.0).best_step == 0


def test_noise_only_is_never_flagged_at_the_default_margin():
    rng = np.random.default_rng(0)
    curve = 2.5 + 3.0 / (1 + STEPS / 2000.0)
    gaps = []
    for _ in range(100):
        s = detect(STEPS, curve * (1 + 0.01 * rng.standard_normal(len(STEPS))), higher_is_better=False)
        gaps.append(s.gap)
        assert not s.saturated and math.isnan(s.onset_step)
    assert max(gaps) > 0.01  # the noise is real: final checkpoints do sit above the best
    # the same noise on a 10% rise is flagged
    rise = np.where(STEPS > 100000, 0.10 * (STEPS - 100000) / (STEPS[-1] - 100000), 0.0)
    assert detect(STEPS, curve * (1 + rise), higher_is_better=False).saturated


def test_running_median_and_bad_series():
    assert running_median3(np.array([1.0, 9.0, 1.0, 2.0])).tolist() == [1.0, 1.0, 2.0, 2.0]
    with pytest.raises(SeriesError, match="2 checkpoint"):
        detect([0, 1], [1.0, 2.0], higher_is_better=False)
    with pytest.raises(SeriesError, match="appears twice"):
        detect([0, 1, 1], [1.0, 2.0, 3.0], higher_is_better=False)


def test_head_signal_moved_first_or_not():
    import pandas as pd

    from lmdynamics.saturation.signals import moved_first

    steps = np.arange(0, 11) * 100
    loss = np.r_[np.linspace(5, 3, 6), 3.0 * np.array([1.0, 1.0, 1.1, 1.2, 1.3])]  # best at 500, rises after 700
    kl = np.r_[np.linspace(0.5, 0.2, 4), 0.2 * np.array([1.0, 1.5, 2, 2.5, 3, 3.5, 4])]  # leaves its minimum after 400
    er = np.r_[np.full(9, 100.0), 99.0, 98.0]  # moves 2%: below the margin
    rows = [dict(model="m", step=s, layer=-1, component="head", metric=m, value=v, tokens=s)
            for m, vals in (("kl_uniform", kl), ("er", er)) for s, v in zip(steps, vals)]
    frame = pd.DataFrame(rows)
    curve = detect(steps, loss, higher_is_better=False)
    assert curve.saturated and curve.onset_step == 700  # 700 is the last plateau checkpoint
    verdict = moved_first(frame, "m", curve)
    assert verdict["kl_uniform"]["moved"] and verdict["kl_uniform"]["onset_step"] == 400 and verdict["kl_uniform"]["first"]
    assert verdict["er"]["moved"] is False and verdict["er"]["first"] is False
    assert verdict["anisotropy"]["moved"] is None  # not in the table
    late = frame.copy()
    late.loc[late.metric == "kl_uniform", "value"] = np.r_[np.full(9, 0.2), 0.4, 0.6]  # leaves it after 800
    assert moved_first(late, "m", curve)["kl_uniform"]["first"] is False  # it moved, but after the curve
