"""The statistics of ``lmdynamics compare`` across groups of runs, function by function (fast): each number against
its definition recomputed here (t-intervals by scipy, slopes by scipy's regression). The command's report around
them: tests/test_compare.py."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lmdynamics.compare.statistics import (cka_at_fractions, convergence_by_group, group_stats, numeric_groups,
                                           trend_per_doubling)


def _interval(values):
    values = [v for v in values if not math.isnan(v)]
    ref = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    return np.mean(values), ref.low, ref.high


def test_convergence_per_group_and_layer_is_the_t_interval_of_its_runs_fractions():
    conv = pd.DataFrame({"run": ["a", "b", "c", "a", "b", "c", "d", "d"], "layer": [0, 0, 0, 1, 1, 1, 0, 1],
                         "fraction": [0.4, 0.6, 0.5, 0.2, math.nan, 0.3, 0.9, 0.8]})
    groups = {"a": "g1", "b": "g1", "c": "g2", "d": "g2"}
    table = convergence_by_group(conv, groups)
    assert table[["group", "layer"]].values.tolist() == [["g1", 0], ["g1", 1], ["g2", 0], ["g2", 1]]
    g1 = table.iloc[0]
    assert (g1["mean"], g1["ci_low"], g1["ci_high"]) == pytest.approx(_interval([0.4, 0.6]), abs=1e-12)
    assert table["runs"].tolist() == [2, 1, 2, 2]  # g1's layer 1: b never converged (NaN), left out
    assert table.iloc[1]["mean"] == pytest.approx(0.2) and math.isnan(table.iloc[1]["ci_low"])
    g2 = table.iloc[3]
    assert (g2["mean"], g2["ci_low"], g2["ci_high"]) == pytest.approx(_interval([0.3, 0.8]), abs=1e-12)
    assert isinstance(table["layer"].iloc[0], (int, np.integer))


@pytest.mark.parametrize("values, expected", [
    ({"a": "8", "b": 16, "c": 16.0}, {"a": 8.0, "b": 16.0, "c": 16.0}),
    ({"a": "8", "b": "wide"}, None),  # not a number
    ({"a": 8, "b": None}, None),
    ({"a": 0, "b": 8}, None), ({"a": -8, "b": 8}, None),  # log2 needs positive values
    ({"a": 8, "b": 8.0}, None),  # one value: no trend
    ({"a": "0.001", "b": 0.0003}, {"a": 0.001, "b": 0.0003})])  # learning rates: below 1 is fine
def test_a_grouping_key_is_numeric_when_every_run_has_a_distinct_positive_number(values, expected):
    assert numeric_groups(values) == expected


def test_the_trend_per_doubling_is_the_least_squares_slope_per_layer_with_its_interval():
    rng = np.random.default_rng(1)
    d = np.repeat([8, 16, 32, 64], 2)
    runs = [f"r{i}" for i in range(d.size)]
    frames = []
    for layer, slope in ((0, -0.05), (2, 0.02)):
        frames.append(pd.DataFrame({"run": runs, "layer": layer,
                                    "fraction": 0.6 + slope * np.log2(d) + rng.normal(0, 0.02, d.size)}))
    conv = pd.concat(frames + [pd.DataFrame({"run": ["r0"], "layer": [1], "fraction": [0.5]}),  # one run: no slope
                               pd.DataFrame({"run": ["r0", "r2"], "layer": 4, "fraction": [0.1, 0.3]}),  # 2 runs: none
                               pd.DataFrame({"run": ["r0", "r2", "r4"], "layer": 5, "fraction": [0.1, 0.3, 0.2]}),  # 3: one
                               pd.DataFrame({"run": ["s0", "s1", "s2"], "layer": 3, "fraction": [0.1, 0.2, 0.3]})])
    conv.loc[(conv["layer"] == 2) & (conv["run"] == "r7"), "fraction"] = math.nan  # never converged: left out
    values = {r: float(v) for r, v in zip(runs, d)}
    values.update(s0=8.0, s1=8.0, s2=8.0)  # layer 3's three runs have one size: no slope
    table = trend_per_doubling(conv, values)
    assert table["layer"].tolist() == [0, 2, 5]
    three = table.iloc[2]
    ref = stats.linregress(np.log2([8, 16, 32]), [0.1, 0.3, 0.2])  # r0, r2, r4: sizes 8, 16, 32
    assert three["runs"] == 3 and three["slope_per_doubling"] == pytest.approx(ref.slope, abs=1e-12)
    for (_, got), keep in zip(table.iloc[:2].iterrows(), (slice(None), slice(0, 7))):
        rows = conv[conv["layer"] == got["layer"]]
        x, y = np.log2(d[keep]), rows["fraction"].to_numpy()[keep]
        ref = stats.linregress(x, y)
        half = stats.t.ppf(0.975, len(x) - 2) * ref.stderr
        assert got["runs"] == len(x)
        assert (got["slope_per_doubling"], got["ci_low"], got["ci_high"]) == pytest.approx(
            (ref.slope, ref.slope - half, ref.slope + half), abs=1e-12)


def test_cka_at_a_fraction_is_each_runs_nearest_measurement_averaged_then_the_groups_interval():
    rows = []
    # run a: measured at fractions 0.2, 0.5, 1.0 (two layers); run b at 0.3, 0.6, 1.0; run c (other group) at 0.1, 1.0
    for run, fractions in (("a", (0.2, 0.5, 1.0)), ("b", (0.3, 0.6, 1.0)), ("c", (0.1, 1.0))):
        for f in fractions:
            for layer in (0, 1):
                rows.append({"run": run, "layer": layer, "fraction": f, "value": f + 0.1 * layer + (run == "b") * 0.01})
    curves = pd.DataFrame(rows)
    groups = {"a": "d=16", "b": "d=16", "c": "d=8"}
    table = cka_at_fractions(curves, groups, points=(0.25, 0.9))
    assert table[["group", "fraction"]].values.tolist() == [["d=8", 0.25], ["d=16", 0.25], ["d=8", 0.9], ["d=16", 0.9]]
    # at 0.25: a's nearest is 0.2 (mean over layers 0.25), b's 0.3 (0.36); c's 0.1 (0.15). At 0.9: all at 1.0.
    at = table.set_index(["group", "fraction"])
    assert (at.loc[("d=16", 0.25), "mean"], at.loc[("d=16", 0.25), "ci_low"], at.loc[("d=16", 0.25), "ci_high"]) == \
        pytest.approx(_interval([0.25, 0.36]), abs=1e-12)
    assert at.loc[("d=8", 0.25), "mean"] == pytest.approx(0.15) and at.loc[("d=8", 0.25), "runs"] == 1
    assert at.loc[("d=16", 0.9), "mean"] == pytest.approx(np.mean([1.05, 1.06]))


def test_group_stats_are_each_groups_mean_and_sample_deviation_in_natural_order():
    columns = ["final_val_loss", "best_val_loss", "final_excess_loss", "final_head_er", "final_head_kl_uniform"]
    summary = pd.DataFrame({"group": ["d=16", "d=8", "d=16", "d=8", "d=8"], "run": list("abcde"), "seed": [1, 2, 3, 4, 5],
                            "final_val_loss": [2.0, 3.0, 2.4, 3.2, 3.7], "final_head_er": [5.0, 6.0, 7.0, 8.0, 9.0]})
    for i, c in enumerate(columns[1:]):
        if c != "final_head_er":
            summary[c] = summary["final_val_loss"] + i
    table = group_stats(summary)
    assert table["group"].tolist() == ["d=8", "d=16"] and table["runs"].tolist() == [3, 2]
    assert list(table.columns) == ["group", "runs", *[f"{c}_{s}" for c in columns for s in ("mean", "std")]]
    for c in columns:
        for (_, row), g in zip(table.iterrows(), ("d=8", "d=16")):
            values = summary.loc[summary["group"] == g, c]
            assert (row[f"{c}_mean"], row[f"{c}_std"]) == pytest.approx((values.mean(), values.std(ddof=1)), abs=1e-12)
    d8 = table.iloc[0]
    assert (d8["final_val_loss_mean"], d8["final_val_loss_std"]) == pytest.approx(
        (np.mean([3.0, 3.2, 3.7]), np.std([3.0, 3.2, 3.7], ddof=1)), abs=1e-12)
    assert (table.iloc[1]["final_head_er_mean"], table.iloc[1]["final_head_er_std"]) == pytest.approx(
        (6.0, np.std([5.0, 7.0], ddof=1)), abs=1e-12)


def test_tables_without_rows_keep_their_columns():
    conv = pd.DataFrame({"run": ["a"], "layer": [0], "fraction": [math.nan]})
    assert list(trend_per_doubling(conv, {"a": 8.0}).columns) == ["layer", "runs", "slope_per_doubling", "ci_low", "ci_high"]
    assert list(convergence_by_group(conv.iloc[:0], {}).columns) == ["group", "layer", "runs", "mean", "ci_low", "ci_high"]
    curves = pd.DataFrame({"run": [], "layer": [], "fraction": [], "value": []})
    assert list(cka_at_fractions(curves, {}).columns) == ["group", "fraction", "runs", "mean", "ci_low", "ci_high"]
