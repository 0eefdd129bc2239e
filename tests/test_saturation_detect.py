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


# --- every field of detect() and each boundary of its definitions (module docstring) --------------------------


@pytest.mark.parametrize("higher", [False, True])
def test_fields_read_from_an_unsorted_series(higher):
    """best, final and the count of checkpoints are those of the series in step order, whatever the row order;
    the direction is reported as given."""
    steps = [300, 0, 500, 100, 400, 200]
    values = [2.4, 9.0, 3.0, 5.0, 2.6, 2.0]  # in step order: 9, 5, 2 (best), 2.4, 2.6, 3 (final)
    if higher:
        values = [1 / v for v in values]
    f = detect(steps, values, higher_is_better=higher)
    assert f.higher_is_better is higher and f.checkpoints == 6
    assert (f.best_step, f.final_step) == (200, 500)
    assert f.best_value == pytest.approx(2.0 if not higher else 0.5) and f.final_value == pytest.approx(3.0 if not higher else 1 / 3)
    assert f.gap == pytest.approx(0.5) and f.saturated
    assert f.as_dict() == {name: getattr(f, name) for name in f.__dataclass_fields__}  # the saturation.csv row


def test_saturated_means_a_gap_strictly_above_the_margin():
    # 5 / 4 - 1 is exactly 0.25 in binary floating point
    at = detect([0, 1, 2, 3], [8.0, 4.0, 4.5, 5.0], higher_is_better=False, margin=0.25)
    assert at.gap == 0.25 and not at.saturated and math.isnan(at.onset_step)
    assert detect([0, 1, 2, 3], [8.0, 4.0, 4.5, 5.0], higher_is_better=False, margin=0.2499).saturated


def test_margin_zero_is_allowed_and_bad_parameters_are_refused():
    assert detect([0, 1, 2, 3], [8.0, 4.0, 4.0, 4.001], higher_is_better=False, margin=0.0).saturated
    for min_fraction, margin in ((1.0, 0.05), (1.5, 0.05), (-0.1, 0.05), (0.1, -0.01)):
        with pytest.raises(SeriesError, match=r"min_fraction must be in \[0, 1\) and margin >= 0"):
            detect([0, 1, 2, 3], [8.0, 4.0, 4.0, 5.0], higher_is_better=False, min_fraction=min_fraction, margin=margin)


def test_onset_tolerance_defaults_to_half_the_margin_and_is_inclusive():
    # best 4.0 at step 2, then a plateau of 5.0: 5 / 4 - 1 is exactly 0.25, the default tolerance for margin 0.5
    values = [9.0, 6.0, 4.0, 5.0, 5.0, 5.0, 8.0, 8.0]
    f = detect(range(8), values, higher_is_better=False, min_fraction=0.0, margin=0.5)
    assert f.saturated and f.onset_step == 5  # the last smoothed value within 25% (inclusive) of the best
    # a tolerance of a third of the margin (0.1667) leaves the plateau at +25% out: onset at the best checkpoint
    assert detect(range(8), values, higher_is_better=False, min_fraction=0.0, margin=0.5, onset_tolerance=0.5 / 3).onset_step == 2
    assert detect(range(8), values, higher_is_better=False, min_fraction=0.0, margin=0.5, onset_tolerance=0.75).onset_step == 5
    # 4.3 / 4 - 1 = 0.075: inside a tolerance of 0.1 / 2 = 0.05? no; of 0.2 / 2 = 0.1: yes
    wide = [9.0, 6.0, 4.0, 4.3, 4.3, 4.3, 8.0, 8.0]
    assert detect(range(8), wide, higher_is_better=False, min_fraction=0.0, margin=0.2).onset_step == 5
    assert detect(range(8), wide, higher_is_better=False, min_fraction=0.0, margin=0.1).onset_step == 2


def test_onset_is_never_before_the_best_checkpoint():
    """A best value that is a one-checkpoint dip (smoothed away) after a near-best plateau: no smoothed value
    from the best on is within the tolerance, and the onset is the best checkpoint itself, not the plateau
    before it."""
    values = [5.0, 2.51, 2.51, 2.6, 2.5, 2.9, 3.2, 3.5, 3.8]
    f = detect(range(9), values, higher_is_better=False, min_fraction=0.0)
    assert f.best_step == 4 and f.saturated and f.onset_step == 4
    rng = np.random.default_rng(5)
    for _ in range(300):
        walk = np.exp(np.cumsum(rng.normal(0, 0.05, size=12)))
        f = detect(range(12), walk, higher_is_better=False)
        assert not f.saturated or f.best_step <= f.onset_step <= f.final_step


def test_gap_is_nan_when_a_value_is_not_positive():
    from lmdynamics.saturation.detect import relative_gap
    for value, best in ((0.0, 1.0), (1.0, 0.0), (-1.0, 2.0), (2.0, -1.0)):
        assert math.isnan(relative_gap(value, best, False)) and math.isnan(relative_gap(value, best, True))
    f = detect([0, 1, 2, 3], [3.0, 2.0, 1.0, 0.0], higher_is_better=True)
    assert math.isnan(f.gap) and not f.saturated


def test_running_median_of_exactly_three_points_smooths_the_middle():
    assert running_median3(np.array([1.0, 5.0, 2.0])).tolist() == [1.0, 2.0, 2.0]
    assert running_median3(np.array([1.0, 5.0])).tolist() == [1.0, 5.0]
