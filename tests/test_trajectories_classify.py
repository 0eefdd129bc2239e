"""Planted trajectories on the uneven Pythia schedule, both regressors; shares; both double-descent definitions."""

import numpy as np
import pytest
from scipy import stats

from lmdynamics.checkpoints import PYTHIA_STEPS
from lmdynamics.metrics.trends import classify_trend, classify_trends, double_descent_windows, window_start
from lmdynamics.trajectories.classify import class_shares, double_descent_shares
from lmdynamics.trajectories.storage import TokenTable, Trajectories

STEPS = np.array(PYTHIA_STEPS, dtype=float)  # 0, 1, 2, 4, ..., 512, 1000, 2000, ..., 143000
REGRESSORS = ("step", "log_step")


def planted(kind: str, rng) -> np.ndarray:
    s = STEPS / STEPS[-1]
    if kind == "upward":
        return 10 * (1 + 0.3 * s) * np.exp(rng.normal(0, 0.005, len(s)))
    if kind == "downward":
        return 10 * (1 - 0.3 * s) * np.exp(rng.normal(0, 0.005, len(s)))
    if kind == "stagnant":
        return 10 * (1 + 0.002 * np.cos(np.arange(len(s)) * 2.5))
    if kind == "down-up-down":
        a, b = STEPS[52], STEPS[103]  # near the default thirds of the schedule's checkpoints
        shape = np.interp(STEPS, [0, a, b, STEPS[-1]], [20, 10, 16, 8])
        return shape * np.exp(rng.normal(0, 0.005, len(s)))
    raise AssertionError(kind)


@pytest.mark.parametrize("regressor", REGRESSORS)
@pytest.mark.parametrize("kind, label", [("upward", "upward"), ("downward", "downward"), ("stagnant", "stagnated")])
def test_planted_trends_on_the_pythia_schedule(regressor, kind, label):
    rng = np.random.default_rng(0)
    for p in (0.1, 0.4, 0.7):
        assert classify_trend(planted(kind, rng), STEPS, p, regressor=regressor) == label


@pytest.mark.parametrize("regressor", REGRESSORS)
def test_noisy_flat_is_significant_at_rate_alpha_for_both_regressors(regressor):
    rng = np.random.default_rng(1)
    n = 3000
    values = 20 * np.exp(rng.normal(0, 0.1, size=(n, len(STEPS))))
    labels = classify_trends(values, STEPS, 0.1, regressor=regressor).labels
    sig = np.mean((labels == "upward") | (labels == "downward"))
    assert abs(sig - 0.05) < 4.5 * np.sqrt(0.05 * 0.95 / n)
    # stagnated: not significant and both ends within 5% of the geometric mean, P(one end) from the noise law
    one_end = stats.norm.cdf(np.log(1.05), scale=0.1) - stats.norm.cdf(np.log(0.95), scale=0.1)
    assert np.mean(labels == "stagnated") == pytest.approx(0.95 * one_end ** 2, abs=0.02)


def test_log_regressor_is_ols_on_log_step_with_an_intercept():
    rng = np.random.default_rng(2)
    values = np.exp(rng.normal(0, 0.05, size=(10, len(STEPS))) + 0.1 * np.log1p(STEPS) * rng.normal(size=(10, 1)))
    res = classify_trends(values, STEPS, 0.3, regressor="log_step")
    j = res.start
    for i in range(10):
        ref = stats.linregress(np.log(STEPS[j:]), values[i, j:] / values[i, j])
        assert res.slope[i] == pytest.approx(ref.slope, rel=1e-9)
        assert res.p_value[i] == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-300)
    # the two regressors disagree where the curve is concave in step: they are not the same test
    step_p = classify_trends(values, STEPS, 0.3, regressor="step").p_value
    assert not np.allclose(step_p, res.p_value)


def test_window_start_on_uneven_spacing():
    # 0.1 x 143000 = 14300: the first checkpoint at or after it is 15000 (not the nearest, 14000)
    assert STEPS[window_start(STEPS, 0.1)] == 15000 and STEPS[window_start(STEPS, 0.7)] == 101000
    assert STEPS[window_start(STEPS, 0.2)] == 28600 // 1000 * 1000 + 1000
    # a trajectory falling until 14000 and rising after: the window at 0.1 sees only the rise
    v = np.where(STEPS <= 14000, 30 - STEPS / 1000, 16 + (STEPS - 14000) / 20000)
    for regressor in REGRESSORS:
        assert classify_trend(v, STEPS, 0.1, regressor=regressor) == "upward"
    assert classify_trend(v, STEPS, 0.0, regressor="step") != "upward"


def test_variance_condition_depends_on_the_scale_which_is_why_it_is_off():
    v = 1 + 0.01 * np.cos(np.arange(len(STEPS)) * 2.5)
    for scale in (1.0, 1e5):
        assert classify_trend(scale * v, STEPS, 0.1, regressor="log_step") == "stagnated"
    assert classify_trend(v, STEPS, 0.1, regressor="log_step", variance_condition=True) == "stagnated"
    assert classify_trend(1e5 * v, STEPS, 0.1, regressor="log_step", variance_condition=True) == "other"


def test_log_regressor_refuses_a_window_at_step_zero():
    with pytest.raises(ValueError, match="positive steps"):
        classify_trends(np.ones((1, 5)), np.arange(5.0), 0.0, regressor="log_step")
    with pytest.raises(ValueError, match="regressor"):
        classify_trends(np.ones((1, 5)), np.arange(5.0), 0.0, regressor="sqrt")


@pytest.mark.parametrize("regressor", REGRESSORS)
def test_per_token_double_descent_finds_down_up_down_only(regressor):
    rng = np.random.default_rng(3)
    kinds = ["down-up-down", "upward", "downward", "stagnant"]
    values = np.stack([planted(k, rng) for k in kinds])
    assert list(double_descent_windows(values, STEPS, regressor=regressor)) == [True, False, False, False]
    up_down = np.interp(STEPS, [0, STEPS[52], STEPS[-1]], [10, 16, 8])  # no first descent
    assert not double_descent_windows(up_down, STEPS, regressor=regressor)[0]
    with pytest.raises(ValueError, match="needs >= 3"):
        double_descent_windows(values, STEPS, splits=(0.9999, 0.99995))


def _trajectories(values: np.ndarray, name="m") -> Trajectories:
    n = values.shape[0]
    table = TokenTable(np.arange(n), np.ones(n), np.zeros(n), np.zeros(n))
    return Trajectories(np.log(values).astype(np.float32), STEPS.astype(np.int64), STEPS.astype(np.int64) * 10,
                        np.full(len(STEPS), 20.0), table, {"model": name})


@pytest.mark.parametrize("regressor", REGRESSORS)
def test_shares_count_the_planted_classes_and_sum_to_one(regressor):
    rng = np.random.default_rng(4)
    kinds = ["upward"] * 5 + ["downward"] * 3 + ["stagnant"] * 2
    traj = _trajectories(np.stack([planted(k, rng) for k in kinds]))
    cls = np.array(["a"] * 6 + ["b"] * 4, dtype=object)
    frame = class_shares(traj, (0.1, 0.5), regressor=regressor, breakdowns={"token_class": cls})
    sums = frame.groupby(["start_fraction", "breakdown", "group"])["share"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0)
    every = frame[(frame.breakdown == "all") & (frame.start_fraction == 0.1)].set_index("label")["share"]
    assert every["upward"] == pytest.approx(0.5) and every["downward"] == pytest.approx(0.3)
    assert every["stagnated"] == pytest.approx(0.2) and every["other"] == 0
    b = frame[(frame.group == "b") & (frame.start_fraction == 0.5)].set_index("label")["count"]
    assert (b["downward"], b["stagnated"]) == (2, 2)
    dd = double_descent_shares(traj, regressor=regressor)
    assert dd["group_upward_after_20pct"] == pytest.approx(0.5) and dd["per_token_down_up_down"] == 0.0


def test_alpha_and_regressor_reach_every_share():
    """``alpha`` and ``regressor`` given to the shares are the ones their labels use: on noisy trajectories (where
    both change verdicts) each share equals the trend classification made directly from exp(loss) with them."""
    rng = np.random.default_rng(21)
    n = 400
    drift = rng.normal(0, 0.02, size=(n, 1)) * np.log1p(STEPS)[None] + rng.normal(0, 0.01, size=(n, 1)) * STEPS[None] / 1e4
    values = 10 * np.exp(drift + rng.normal(0, 0.05, size=(n, len(STEPS))))
    traj = _trajectories(values)
    ppl = np.exp(traj.losses.astype(np.float64))
    verdicts = set()
    for regressor in REGRESSORS:
        for alpha in (0.05, 0.3):
            frame = class_shares(traj, (0.2,), regressor=regressor, alpha=alpha)
            labels = classify_trends(ppl, STEPS, 0.2, alpha, regressor=regressor).labels
            got = frame.set_index("label")["count"]
            assert set(frame["group"]) == {"all"} and set(frame["breakdown"]) == {"all"}
            assert {lab: int(got[lab]) for lab in got.index} == {lab: int((labels == lab).sum()) for lab in got.index}
            dd = double_descent_shares(traj, regressor=regressor, alpha=alpha)
            assert dd["model"] == "m"
            assert dd["group_upward_after_20pct"] == pytest.approx(float((labels == "upward").mean()))
            per_token = double_descent_windows(ppl, STEPS, 0.0, alpha, regressor=regressor).mean()
            assert dd["per_token_down_up_down"] == pytest.approx(float(per_token))
            verdicts.add((tuple(got.to_numpy()), dd["per_token_down_up_down"]))
    assert len(verdicts) == 4  # each (regressor, alpha) gives other counts: the case discriminates


def test_the_variance_condition_reaches_the_class_shares():
    # flat tokens at perplexity ~10^4 with 2% noise: inside the band, but var (~4e4) > geometric mean (~1e4)
    rng = np.random.default_rng(22)
    traj = _trajectories(1e4 * np.exp(rng.normal(0, 0.02, size=(50, len(STEPS)))))
    ppl = np.exp(traj.losses.astype(np.float64))
    counts = {}
    for condition in (False, True):
        got = class_shares(traj, (0.2,), variance_condition=condition).set_index("label")["count"]
        direct = classify_trends(ppl, STEPS, 0.2, variance_condition=condition).labels
        assert int(got["stagnated"]) == int((direct == "stagnated").sum())
        counts[condition] = int(got["stagnated"])
    assert counts[False] > 40 and counts[True] == 0
