"""Trend classification (Xia et al. 2023): OLS slope p-values, planted-trend recovery at the stated alpha."""

import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from lmdynamics.metrics import classify_trend, classify_trends, double_descent
from lmdynamics.metrics.trends import TooFewCheckpoints, double_descent_windows

STEPS = np.arange(0, 1300, 100)  # 13 checkpoints; start_fraction 0.1 -> window from step 200 (11 points)


def test_slope_and_p_value_match_scipy_linregress():
    rng = np.random.default_rng(0)
    values = np.exp(rng.normal(0, 0.1, size=(20, len(STEPS))) + np.linspace(0, 0.3, len(STEPS)) * rng.normal(size=(20, 1)))
    res = classify_trends(values, STEPS, regressor="step")
    assert res.start == 2
    for i in range(20):
        x = STEPS[2:] - STEPS[2]
        ref = stats.linregress(x, values[i, 2:] / values[i, 2])
        assert res.slope[i] == pytest.approx(ref.slope, rel=1e-9)
        assert res.p_value[i] == pytest.approx(ref.pvalue, rel=1e-7)


def test_false_positive_rate_is_alpha_under_no_trend():
    rng = np.random.default_rng(1)
    n = 4000
    values = 20.0 * np.exp(rng.normal(0, 0.05, size=(n, len(STEPS))))  # no trend, log-normal noise
    for alpha in (0.05, 0.2):
        labels = classify_trends(values, STEPS, alpha=alpha, regressor="step").labels
        up, down = np.mean(labels == "upward"), np.mean(labels == "downward")
        sd = np.sqrt(alpha * (1 - alpha) / n)
        assert abs(up + down - alpha) < 4.5 * sd  # a normal instead of a t reference, or one-sided p, fails this
        assert abs(up - alpha / 2) < 4.5 * np.sqrt(alpha / 2 / n) and abs(down - alpha / 2) < 4.5 * np.sqrt(alpha / 2 / n)


def test_planted_trends_recovered_at_the_t_test_power():
    """Linear trend + i.i.d. noise: the share labelled upward/downward is the t-test's power, which the
    noncentral t gives exactly (dividing by v_start rescales the series, which leaves the t statistic alone)."""
    rng = np.random.default_rng(2)
    n, sigma = 4000, 0.02
    x = STEPS[2:] - STEPS[2]
    sxx = ((x - x.mean()) ** 2).sum()
    df = len(x) - 2
    crit = stats.t.ppf(0.975, df)
    for nc in (2.0, -2.0, 3.0, 12.0, -12.0):  # noncentrality = slope sqrt(Sxx) / sigma
        slope = nc * sigma / np.sqrt(sxx)
        values = 1.0 + slope * STEPS + rng.normal(0, sigma, size=(n, len(STEPS)))
        labels = classify_trends(values, STEPS, regressor="step").labels
        wanted, opposite = ("upward", "downward") if nc > 0 else ("downward", "upward")
        power = stats.nct.sf(crit, df, abs(nc))
        recovered = np.mean(labels == wanted)
        assert recovered == pytest.approx(power, abs=4.5 * np.sqrt(power * (1 - power) / n) + 1e-3)
        assert np.mean(labels == opposite) < 0.005
        if abs(nc) < 5:
            assert 0.3 < power < 0.9  # a regime where the p-value, not the effect, decides


def test_stagnated_and_other():
    t = len(STEPS)
    wiggle = 10.0 * (1 + 0.01 * np.cos(np.arange(t) * 2.5))
    assert classify_trend(wiggle, STEPS, regressor="step") == "stagnated"
    u_shape = np.ones(t)
    u_shape[2], u_shape[-1] = 2.0, 2.0  # first and last of the window far above the geometric mean, no slope
    res = classify_trends(u_shape, STEPS, regressor="step")
    assert res.p_value[0] > 0.05 and res.labels[0] == "other"
    assert classify_trend(np.exp(-STEPS / 500.0), STEPS, regressor="step") == "downward"
    assert classify_trend(torch.tensor(1 + STEPS / 1000.0), torch.tensor(STEPS), regressor="step") == "upward"


def test_window_follows_start_fraction_and_units_do_not_matter():
    rng = np.random.default_rng(3)
    early_drop = np.concatenate([np.linspace(50, 10, 7), 10 + rng.normal(0, 0.01, 6)])
    assert classify_trend(early_drop, STEPS, start_fraction=0.0, regressor="step") == "downward"
    res = classify_trends(early_drop, STEPS, start_fraction=0.5, regressor="step")
    assert res.start == 6 and res.labels[0] in ("stagnated", "other")
    values = np.exp(rng.normal(0, 0.05, size=(50, len(STEPS))) + np.linspace(0, 0.1, len(STEPS)))
    a = classify_trends(values, STEPS, regressor="step")
    b = classify_trends(values * 7.0, STEPS * 3 + 0, regressor="step")
    np.testing.assert_allclose(a.p_value, b.p_value, rtol=1e-9)
    assert (a.labels == b.labels).all()


def test_errors():
    with pytest.raises(ValueError, match="positive"):
        classify_trends(np.array([1.0, 0.0, 2.0]), np.arange(3), regressor="step")
    with pytest.raises(ValueError, match=">= 3"):
        classify_trends(np.ones(4), np.arange(4), start_fraction=0.9, regressor="step")
    with pytest.raises(ValueError, match="increasing"):
        classify_trends(np.ones(4), np.array([0, 2, 1, 3]), regressor="step")
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        classify_trends(np.ones((2, 4)), np.arange(5), regressor="step")


def test_double_descent():
    assert double_descent([5.0, 3.0, 2.0, 3.0, 1.5]) is True  # down, up, down
    assert double_descent([1.0, 2.0, 1.0]) is True  # up then down again
    assert double_descent([5.0, 4.0, 3.0, 2.0]) is False  # monotone
    assert double_descent([1.0, 2.0, 3.0]) is False  # up only
    assert double_descent([2.0, 1.0, 1.04, 1.0]) is False  # a bump below the 5% rise
    assert double_descent([2.0, 1.0, 1.04, 1.0], rise=0.03) is True
    batch = np.array([[5.0, 3.0, 4.0, 2.0], [5.0, 4.0, 3.0, 2.0]])
    np.testing.assert_array_equal(double_descent(batch), [True, False])


# --- discriminating inputs for every threshold and band -------------------------------------------------------


def test_stagnation_band_is_around_the_geometric_mean():
    """Alternating 1.5 and 1/1.5 around 1: geometric mean exactly 1, arithmetic mean 1.06; first and last (1.0)
    lie inside a 5% band of the first and outside it (0.943) of the second. No slope (the series is symmetric)."""
    a = 1.5
    window = np.array([1, a, 1 / a, a, 1 / a, 1, 1 / a, a, 1 / a, a, 1.0])
    assert abs(window.mean() - 1.0606) < 1e-4 and abs(np.exp(np.log(window).mean()) - 1) < 1e-12
    res = classify_trends(window, np.arange(11) * 100.0, start_fraction=0.0, regressor="step")
    assert res.p_value[0] > 0.5 and res.labels[0] == "stagnated"
    # Scaled to perplexities of 30: the band is relative, the label the same.
    assert classify_trend(30 * window, np.arange(11), start_fraction=0.0, regressor="step") == "stagnated"


@pytest.mark.parametrize("values, narrower", [([1.0, 4.0, 4.0, 1.0], (0.51, 2.0)), ([4.0, 1.0, 1.0, 4.0], (0.5, 1.99))])
def test_stagnation_band_edges_are_inclusive(values, narrower):
    """Geometric mean 2 exactly: first and last sit at 0.5 (resp. 2.0) of it, on the band's lower (upper) edge."""
    v = np.array(values)
    res = classify_trends(v, np.arange(4.0), start_fraction=0.0, band=(0.5, 2.0), regressor="step")
    assert res.slope[0] == 0.0 and res.labels[0] == "stagnated"
    assert classify_trends(v, np.arange(4.0), start_fraction=0.0, band=narrower, regressor="step").labels[0] == "other"


def test_band_needs_both_ends_inside():
    steps = np.arange(5.0)
    first_out = np.array([1.2, 1.0, 1.0, 1.0, 1.0])  # no significant slope; first 17% above the mean, last inside
    last_out = first_out[::-1].copy()
    for v in (first_out, last_out):
        res = classify_trends(v, steps, start_fraction=0.0, regressor="step")
        assert res.p_value[0] > 0.05 and res.labels[0] == "other"
    assert classify_trends(first_out, steps, start_fraction=0.0, band=(0.9, 1.2), regressor="step").labels[0] == "stagnated"


def test_perfect_lines_and_constants():
    steps = np.arange(4.0)
    res = classify_trends(np.array([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0], [3.0, 3.0, 3.0, 3.0]]), steps,
                          start_fraction=0.0, regressor="step")
    assert list(res.labels) == ["upward", "downward", "stagnated"]
    assert list(res.p_value) == [0.0, 0.0, 1.0]
    assert res.slope == pytest.approx([1.0, -0.25, 0.0])  # per step, of v / v_start


def test_p_value_against_alpha_is_strict():
    """A series whose p-value is known: the label flips exactly where alpha crosses it."""
    v = np.array([1.0, 1.3, 1.1, 1.6, 1.4, 1.9])
    p = stats.linregress(np.arange(6.0), v).pvalue
    assert 0.001 < p < 0.2
    assert classify_trend(v, np.arange(6.0), start_fraction=0.0, alpha=p * 1.001, regressor="step") == "upward"
    assert classify_trend(v, np.arange(6.0), start_fraction=0.0, alpha=p * 0.999, regressor="step") != "upward"


def test_window_starts_at_the_first_step_reaching_the_fraction():
    # 0.25 x 1200 = 300 is a checkpoint: the window starts there (index 3), not after it.
    assert classify_trends(np.ones(len(STEPS)), STEPS, start_fraction=0.25, regressor="step").start == 3
    assert classify_trends(np.ones(len(STEPS)), STEPS, start_fraction=0.26, regressor="step").start == 4
    # Three checkpoints are enough for the test (one degree of freedom).
    res = classify_trends(np.array([9.0, 1.0, 2.0, 3.5]), np.arange(4.0), start_fraction=0.3, regressor="step")
    assert res.start == 1 and res.labels[0] in ("upward", "other")
    assert res.slope[0] == pytest.approx(1.25)  # from v_start = 1: (1, 2, 3.5) over steps 0, 1, 2


@pytest.mark.parametrize("values", [[2.0, 3.0, 1.0], [1.0, 3.0, 2.0], [2.0, 3.0, 2.0]])
def test_double_descent_rise_is_inclusive_on_each_side(values):
    """The peak 3 is exactly 1.5 x the lower minimum on one side (or both): it counts at rise 0.5, not above."""
    assert double_descent(values, rise=0.5) is True
    assert double_descent(values, rise=0.5000001) is False


def test_double_descent_minimum_before_and_after_the_peak():
    # The peak must clear the minimum of everything before it and everything after it, not just its neighbours.
    assert double_descent([1.0, 5.0, 2.0, 3.0, 4.0], rise=0.5) is True  # peak 5 at k=1
    assert double_descent([1.0, 1.2, 3.0, 1.4, 1.45], rise=0.5) is True  # peak 3: minima 1 and 1.4
    assert double_descent([2.0, 1.0, 1.4, 3.0], rise=0.5) is False  # the rise is at the end: nothing after
    assert double_descent([3.0, 1.4, 1.0, 2.0], rise=0.5) is False  # a fall at the start: nothing before
    assert double_descent([1.0, 1.6, 1.0], rise=0.5) is True and double_descent([1.0, 1.4, 1.0], rise=0.5) is False
    assert double_descent([1.0, 2.0]) is False and list(double_descent(np.ones((2, 2)))) == [False, False]


def test_inputs_are_read_in_float64_from_numpy_and_torch():
    rng = np.random.default_rng(4)
    values = np.exp(rng.normal(0, 0.1, size=(5, len(STEPS)))).astype(np.float32)
    res = classify_trends(values, STEPS, regressor="step")
    for i in range(5):  # float32 arithmetic would miss this by ~1e-7
        ref = stats.linregress(STEPS[2:] - STEPS[2], values[i, 2:].astype(np.float64) / np.float64(values[i, 2]))
        assert res.slope[i] == pytest.approx(ref.slope, rel=1e-12)
    tracked = torch.tensor(values[0], dtype=torch.float64, requires_grad=True)  # straight from a graph
    assert classify_trend(tracked, STEPS, regressor="step") == classify_trends(values[:1].astype(np.float64), STEPS, regressor="step").labels[0]
    assert double_descent(torch.tensor([1.0, 2.0, 1.0], requires_grad=True)) is True


def test_perfect_lines_raise_no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = classify_trends(np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]]), np.arange(3.0), start_fraction=0.0, regressor="step")
    assert list(res.labels) == ["upward", "stagnated"]


def test_alpha_equal_to_the_p_value_is_not_significant():
    v = np.array([1.0, 1.3, 1.1, 1.6, 1.4, 1.9])
    p = classify_trends(v, np.arange(6.0), start_fraction=0.0, regressor="step").p_value[0]
    assert classify_trend(v, np.arange(6.0), start_fraction=0.0, alpha=p, regressor="step") != "upward"


def test_classify_trend_passes_the_band_on():
    v = np.array([1.2, 1.0, 1.0, 1.0, 1.0])
    assert classify_trend(v, np.arange(5.0), start_fraction=0.0, regressor="step") == "other"
    assert classify_trend(v, np.arange(5.0), start_fraction=0.0, band=(0.9, 1.2), regressor="step") == "stagnated"


def test_more_bad_inputs():
    with pytest.raises(ValueError, match="start_fraction"):
        classify_trends(np.ones(4), np.arange(4), start_fraction=1.0, regressor="step")
    with pytest.raises(ValueError, match="increasing"):
        classify_trends(np.ones(4), np.array([0, 1, 1, 2]), regressor="step")  # a repeated step
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        classify_trends(np.ones((1, 4)), np.arange(4.0)[:, None], regressor="step")  # steps (T, 1)
    with pytest.raises(ValueError, match="one trajectory"):
        classify_trend(np.ones((2, 4)), np.arange(4), regressor="step")
    with pytest.raises(ValueError, match=r"\(T,\) or \(N, T\)"):
        double_descent(np.ones((2, 2, 3)))


def test_double_descent_uses_running_minima_not_neighbours():
    # Peak 1.8 at k = 3: its neighbour before (1.3) gives no 50% rise, the earlier minimum 1.0 does; no other
    # checkpoint rises 50% above anything.
    assert double_descent([1.0, 1.4, 1.3, 1.8, 1.0], rise=0.5) is True
    assert double_descent([1.0, 1.8, 1.3, 1.4, 1.0], rise=0.5) is True  # and mirrored: the later minimum
    batch = np.array([[1.0, 1.4, 1.3, 1.8, 1.0], [3.0, 3.0, 3.0, 3.0, 3.0], [5.0, 1.0, 1.0, 1.0, 5.0]])
    np.testing.assert_array_equal(double_descent(batch, rise=0.5), [True, False, False])
    short = double_descent(np.ones((3, 2)))
    assert short.dtype == bool and short.shape == (3,) and not short.any()


def test_one_default_regressor_log_step_everywhere():
    """metrics.classify_trend(s), the trajectory commands and the reports share one default: log(step). A
    trajectory that is flat in log(step) after a fast early fall, but still falling in linear steps, tells them apart."""
    import inspect

    from lmdynamics.metrics.trends import DEFAULT_TRAJECTORY_REGRESSOR
    from lmdynamics.trajectories.classify import trend_labels

    assert DEFAULT_TRAJECTORY_REGRESSOR == "log_step"
    for fn in (classify_trends, classify_trend, trend_labels):
        assert inspect.signature(fn).parameters["regressor"].default == "log_step", fn
    steps = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024], dtype=float)
    values = 10.0 - np.log(steps) + np.where(np.arange(11) % 2, 0.3, -0.3)  # linear in log(step), zig-zag
    assert classify_trend(values, steps, start_fraction=0.0) == classify_trend(values, steps, start_fraction=0.0, regressor="log_step")
    by_step = classify_trends(values, steps, start_fraction=0.0, regressor="step")
    by_log = classify_trends(values, steps, start_fraction=0.0)
    assert by_log.p_value[0] < by_step.p_value[0]


# --- per-token double descent: the three windows the docstring describes ----------------------------------------


def _windows_by_hand(steps, start_fraction, regressor, splits):
    """The three windows of ``double_descent_windows`` written from its docstring: from the first checkpoint at or
    after start_fraction of the last step (the first positive step on the log axis), cut at thirds of that
    checkpoint list by count (or at the first checkpoint reaching each split), sharing their boundaries."""
    first = next(i for i, s in enumerate(steps) if s >= start_fraction * steps[-1])
    if regressor == "log_step" and steps[first] <= 0:
        first += 1
    n = len(steps) - first
    if splits is None:
        cuts = [first + round(k * (n - 1) / 3) for k in (1, 2)]
    else:
        cuts = [next(i for i, s in enumerate(steps) if s >= f * steps[-1]) for f in splits]
    return [(first, cuts[0]), (cuts[0], cuts[1]), (cuts[1], len(steps) - 1)]


@pytest.mark.parametrize("steps, start_fraction, regressor, alpha, splits", [
    (np.arange(0, 10), 0.0, "step", 0.05, None),  # window from step 0 on the linear axis
    (np.arange(0, 13), 0.0, "log_step", 0.05, None),  # step 0 has no log: from step 1
    (np.arange(1, 11), 0.0, "log_step", 0.05, None),  # step 1 (log 0) is a valid start
    (np.arange(0, 1400, 100), 0.3, "step", 0.2, None),  # a later start and another alpha
    (np.arange(0, 1400, 100), 0.0, "log_step", 0.05, (0.3, 0.6)),
])
def test_double_descent_windows_are_the_documented_three_slope_tests(steps, start_fraction, regressor, alpha, splits):
    # Noisy down-up-down shapes turning within a checkpoint of the windows' cuts: many tokens sit near a window's
    # edge or alpha, so a window one checkpoint off, or another alpha, changes some verdicts.
    rng = np.random.default_rng(11)
    bounds = _windows_by_hand(list(steps), start_fraction, regressor, splits)
    i = np.arange(len(steps))
    a = bounds[0][1] + rng.integers(-1, 2, size=(600, 1))
    b = bounds[1][1] + rng.integers(-1, 2, size=(600, 1))
    shape = -np.minimum(i, a) + np.clip(i - a, 0, b - a) - np.maximum(i - b, 0)  # down to a, up to b, down
    values = np.exp(0.2 * shape + rng.normal(0, 0.06, size=shape.shape) + 3)
    expected = np.ones(len(values), dtype=bool)
    for (lo, hi), want in zip(bounds, ("downward", "upward", "downward")):
        labels = classify_trends(values[:, lo:hi + 1], steps[lo:hi + 1], 0.0, alpha, regressor=regressor).labels
        expected &= labels == want
    got = double_descent_windows(values, steps, start_fraction, alpha, regressor=regressor, splits=splits)
    assert 20 < expected.sum() < 580  # the case discriminates
    np.testing.assert_array_equal(got, expected)


def test_noise_is_not_double_descent_at_the_default_alpha():
    # Three significant slopes in a row happen by chance at most about (alpha/2)^3 of the time on pure noise; a
    # default alpha near 1 would flag about one token in eight.
    rng = np.random.default_rng(12)
    values = np.exp(rng.normal(0, 0.1, size=(4000, 13)) + 3)
    flagged = double_descent_windows(values, STEPS, regressor="step")
    assert flagged.mean() < 0.002
    np.testing.assert_array_equal(flagged, double_descent_windows(values, STEPS, alpha=0.05, regressor="step"))


@pytest.mark.parametrize("splits, window", [((2 / 12, 3 / 12), "middle"), ((0.5, 11 / 12), "last"),
                                             ((1 / 12, 0.5), "first")])
def test_a_two_checkpoint_window_is_too_few_and_three_are_enough(splits, window):
    # STEPS has 13 checkpoints (0..1200 by 100); each split lands on the checkpoint at that fraction of 1200.
    values = np.exp(np.random.default_rng(13).normal(0, 0.1, size=(5, 13)) + 3)
    with pytest.raises(TooFewCheckpoints, match="only 2 checkpoint"):
        double_descent_windows(values, STEPS, regressor="step", splits=splits)
    # widened by one checkpoint, the same window holds three and gets its slope test
    wider = {"middle": (2 / 12, 4 / 12), "last": (0.5, 10 / 12), "first": (2 / 12, 0.5)}[window]
    assert double_descent_windows(values, STEPS, regressor="step", splits=wider).shape == (5,)


def test_splits_must_lie_in_order_inside_the_window():
    values = np.exp(np.random.default_rng(14).normal(0, 0.1, size=(3, 13)) + 3)
    assert double_descent_windows(values, STEPS, 0.25, regressor="step", splits=(0.45, 0.7)).shape == (3,)
    # a first cut at the window's start is in order (start_fraction <= a); that first window is then too short
    with pytest.raises(TooFewCheckpoints, match="only 1 checkpoint"):
        double_descent_windows(values, STEPS, 0.25, regressor="step", splits=(0.25, 0.6))
    for bad in [(0.5, 0.5), (0.3, 1.0), (0.3, 1.5), (0.2, 0.6)]:
        with pytest.raises(ValueError, match="splits must satisfy"):
            double_descent_windows(values, STEPS, 0.25, regressor="step", splits=bad)


def test_start_fraction_one_is_refused_by_name():
    with pytest.raises(ValueError, match=r"start_fraction must be in \[0, 1\)"):
        classify_trends(np.ones(13), STEPS, start_fraction=1.0, regressor="step")
    with pytest.raises(ValueError, match="start_fraction"):
        classify_trends(np.ones(13), STEPS, start_fraction=1.5, regressor="step")


@pytest.mark.parametrize("call", [
    lambda v, s: classify_trends(v, s), lambda v, s: double_descent_windows(v, s)])
def test_shape_errors_name_the_function_called(call):
    name = call.__code__.co_names[0]
    with pytest.raises(ValueError, match=rf"^{name}: values must be \(N, T\)"):
        call(np.ones((2, 4)), np.arange(1, 6))


@pytest.mark.parametrize("variance_condition", [False, True])
def test_each_token_is_classified_on_its_own(variance_condition):
    """A token's label, slope and p-value do not depend on which other tokens share the batch (the variance
    condition included: each token's window variance against its own geometric mean)."""
    rng = np.random.default_rng(15)
    scale = np.exp(rng.uniform(0, 7, size=(300, 1)))  # perplexities from 1 to ~1100
    values = scale * np.exp(rng.normal(0, 0.02, size=(300, 13)) + rng.normal(0, 0.002, size=(300, 1)) * np.arange(13))
    batch = classify_trends(values, STEPS, variance_condition=variance_condition, regressor="step")
    one_by_one = [classify_trends(v, STEPS, variance_condition=variance_condition, regressor="step") for v in values]
    np.testing.assert_array_equal(batch.labels, [c.labels[0] for c in one_by_one])
    np.testing.assert_allclose(batch.slope, [c.slope[0] for c in one_by_one], rtol=1e-12)  # a matmul's rounding
    np.testing.assert_allclose(batch.p_value, [c.p_value[0] for c in one_by_one], rtol=1e-9)
    assert len(set(batch.labels)) >= 3  # the batch mixes labels


def test_the_variance_condition_only_narrows_stagnation_it_never_labels_out_of_band_tokens():
    """``variance_condition`` adds var < m to the band rule (stagnated = in the band, no significant slope, and
    var < m): a token that ends outside the band stays "other" however small its variance, with or without it."""
    wiggle = 1 + 0.01 * np.cos(np.arange(len(STEPS)) * 2.5)
    out_of_band = wiggle.copy()
    out_of_band[-1] = 1.12  # ends 12% up: last / geometric mean > 1.05
    values = np.stack([wiggle, out_of_band])
    for condition in (False, True):
        got = classify_trends(values, STEPS, 0.1, regressor="log_step", variance_condition=condition)
        assert got.p_value[1] >= 0.05 and values[1, got.start:].var() < 1.0  # not significant, variance far below m
        assert list(got.labels) == ["stagnated", "other"], condition
