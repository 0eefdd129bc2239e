"""The verdict of ``lmdynamics compare`` and its group means, function by function (fast): every interval against
scipy's t-tests (independent references), the words at the interval's edges, which runs pair and which group is
the baseline. The command's report around them: tests/test_compare.py."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lmdynamics.compare.grouping import group_of
from lmdynamics.compare.verdict import (LOSSES, difference, means_table, remaining_keys, t_interval, verdict_table,
                                        welch_interval, word)


@pytest.mark.parametrize("values", [[3.0, 3.2, 3.1], [1.0, 2.0], [0.5, 0.7, 0.2, 0.9, 0.4, 0.45]])
def test_t_interval_is_scipys_one_sample_interval(values):
    ref = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    mean, low, high, n = t_interval(values + [math.nan])  # a NaN is left out
    assert (mean, low, high, n) == pytest.approx((np.mean(values), ref.low, ref.high, len(values)), abs=1e-12)


def test_t_interval_of_one_value_and_of_none():
    assert t_interval([2.5, math.nan])[0] == 2.5 and t_interval([2.5])[3] == 1
    assert all(math.isnan(x) for x in t_interval([2.5])[1:3])
    mean, low, high, n = t_interval([math.nan])
    assert n == 0 and math.isnan(mean) and math.isnan(low) and math.isnan(high)


@pytest.mark.parametrize("a, b", [([4.0, 4.1], [3.0, 3.2, 3.1]), ([1.0, 1.5, 0.7, 1.2], [0.9, 1.0, 1.1]),
                                  ([2.0, 2.1, 2.05], [1.0, 3.0])])
def test_welch_interval_is_scipys_welch_interval_both_ways(a, b):
    for x, y in ((a, b), (b, a)):  # unequal sizes and variances: the degrees of freedom are Welch's
        ref = stats.ttest_ind(x, y, equal_var=False).confidence_interval(0.95)
        got = welch_interval(x + [math.nan], [math.nan] + y)
        assert got == pytest.approx((np.mean(x) - np.mean(y), ref.low, ref.high), abs=1e-12)


def test_welch_interval_with_too_few_runs_or_no_spread():
    diff, low, high = welch_interval([4.0], [3.0, 3.5])
    assert diff == pytest.approx(0.75) and math.isnan(low) and math.isnan(high)
    diff, low, high = welch_interval([3.0, 3.5], [4.0, math.nan])
    assert diff == pytest.approx(-0.75) and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(x) for x in welch_interval([], [1.0, 2.0]))
    assert all(math.isnan(x) for x in welch_interval([1.0, 2.0], [math.nan]))
    assert welch_interval([2.0, 2.0], [1.5, 1.5, 1.5]) == (0.5, 0.5, 0.5)  # no spread: the difference exactly


@pytest.mark.parametrize("a, b, diff", [([], [1.0, 2.0], math.nan), ([1.0, 2.0], [math.nan], math.nan),
                                        ([4.0], [3.0, 3.5], 0.75), ([3.0, 3.5, 3.2], [4.0], np.mean([3.0, 3.5, 3.2]) - 4.0)])
def test_too_few_runs_on_a_side_give_no_interval_without_numpy_warnings(a, b, diff):
    """An empty side or a single run is the usual case of a new intervention: NaN bounds, no warning printed."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = welch_interval(a, b)
    assert got[0] == pytest.approx(diff, nan_ok=True) and math.isnan(got[1]) and math.isnan(got[2])


@pytest.mark.parametrize("low, high, expected", [
    (-0.3, -0.1, "better"), (-0.3, 0.0, "no significant difference"), (0.0, 0.2, "no significant difference"),
    (0.1, 0.2, "worse"), (-0.1, 0.1, "no significant difference"), (math.nan, 0.1, "too few runs for an interval"),
    (-0.1, math.nan, "too few runs for an interval")])
def test_the_word_says_where_the_interval_lies_against_zero(low, high, expected):
    assert word(low, high) == expected


def _runs(values: dict) -> pd.DataFrame:
    return pd.DataFrame({"seed": list(values), "final_val_loss": list(values.values())})


def test_runs_pair_by_seed_once_two_seeds_are_common():
    treated, base = {1: 2.8, 2: 3.1, 3: 2.85, 9: 1.0}, {1: 3.0, 2: 3.2, 3: 3.1, 7: 5.0}  # seeds 9 and 7 unpaired
    d = difference(_runs(treated), _runs(base), "final_val_loss")
    paired = [treated[s] - base[s] for s in (1, 2, 3)]
    ref = stats.ttest_1samp(paired, 0.0).confidence_interval(0.95)
    assert d["pairing"] == "by seed" and d["n"] == "3 pairs"
    assert (d["difference"], d["ci_low"], d["ci_high"]) == pytest.approx((np.mean(paired), ref.low, ref.high), abs=1e-12)


def test_runs_pair_by_seed_whatever_the_seeds_types():
    """Seeds read from configs and run.json need not share a type (an int, a name): each still pairs with its own."""
    treated, base = {1: 2.8, "b": 3.1, "c": 2.85}, {"c": 3.1, 1: 3.0, "b": 3.2}
    d = difference(_runs(treated), _runs(base), "final_val_loss")
    paired = [treated[s] - base[s] for s in treated]
    ref = stats.ttest_1samp(paired, 0.0).confidence_interval(0.95)
    assert d["pairing"] == "by seed" and d["n"] == "3 pairs"
    assert (d["difference"], d["ci_low"], d["ci_high"]) == pytest.approx((np.mean(paired), ref.low, ref.high), abs=1e-12)


def test_a_seed_run_twice_pairs_by_its_mean_and_a_missing_value_unpairs_it():
    treated = pd.DataFrame({"seed": [1, 1, 2, 3], "final_val_loss": [2.7, 2.9, 3.1, math.nan]})
    base = _runs({1: 3.0, 2: 3.2, 3: 3.1})
    d = difference(treated, base, "final_val_loss")
    assert d["n"] == "2 pairs"  # seed 3's treated value is missing
    assert d["difference"] == pytest.approx(np.mean([2.8 - 3.0, 3.1 - 3.2]), abs=1e-12)


def test_fewer_than_two_common_seeds_compare_all_runs_unpaired():
    treated, base = {1: 4.0, 5: 4.1, 6: math.nan}, {1: 3.0, 2: 3.2, 3: 3.1}
    d = difference(_runs(treated), _runs(base), "final_val_loss")
    ref = stats.ttest_ind([4.0, 4.1], [3.0, 3.2, 3.1], equal_var=False).confidence_interval(0.95)
    assert d["pairing"] == "unpaired (Welch)" and d["n"] == "2 vs 3"
    assert (d["difference"], d["ci_low"], d["ci_high"]) == pytest.approx((4.05 - 3.1, ref.low, ref.high), abs=1e-12)


def test_the_baseline_shares_every_key_but_the_intervention_and_its_parameters():
    keys = ["model.model.hidden_size", "model.model.head.kind", "model.model.head.components", "optim.lr"]
    assert remaining_keys(keys, "model.model.head.kind") == ["model.model.hidden_size", "optim.lr"]
    assert remaining_keys(keys, "optim.lr") == keys[:3]  # not a kind: nothing else belongs to it
    assert remaining_keys(["a.kind", "b.components", "a.x"], "a.kind") == ["b.components"]


KEYS = ["model.hidden_size", "model.head.kind", "model.head.components"]


def _summary(runs):
    """(hidden size, head kind, components, seed, final, best) per run -> the per-run summary and its groups."""
    groups, rows = {}, []
    for d, kind, k, seed, final, best in runs:
        g = group_of({"model": {"hidden_size": d, "head": {"kind": kind, "components": k}}}, {}, KEYS)
        groups[g.label] = g
        rows.append({"group": g.label, "seed": seed, "final_val_loss": final, "best_val_loss": best})
    return pd.DataFrame(rows), groups


def test_each_group_is_compared_with_the_baseline_of_its_own_size_for_every_loss_present():
    runs = [(d, kind, 4, seed, 3.0 + 0.1 * seed - (0.3 if kind == "mos" else 0) - d / 100, 2.9 + 0.05 * seed - d / 100)
            for d in (16, 8) for kind in ("plain", "mos") for seed in (1, 2, 3)]
    runs += [(4, "mos", 4, 1, 2.0, 2.0)]  # no plain run at d = 4 (first in order: the groups after it still count)
    summary, groups = _summary(runs)
    summary["final_excess_loss"] = math.nan  # runs on real text: no excess loss, which must not unpair the others
    table = verdict_table(summary, groups, KEYS, "model.head.kind", "plain")
    assert list(table.columns) == ["group", "baseline", "metric", "difference", "ci_low", "ci_high", "n", "pairing",
                                   "verdict"]
    assert list(table["group"].unique()) == ["d=4 · head=mos K=4", "d=8 · head=mos K=4", "d=16 · head=mos K=4"]
    lone = table[table["group"] == "d=4 · head=mos K=4"].iloc[0]
    assert (lone["verdict"], lone["baseline"], lone["metric"]) == ("no baseline run at the same model.hidden_size", "", "")
    assert (table["pairing"].iloc[1:] == "by seed").all() and (table["n"].iloc[1:] == "3 pairs").all()
    for d in (8, 16):
        rows = table[table["group"] == f"d={d} · head=mos K=4"]
        assert rows["baseline"].tolist() == [f"d={d} · head=plain"] * 2
        assert rows["metric"].tolist() == ["final validation loss", "best validation loss"]  # no excess loss column
        for (_, row), column in zip(rows.iterrows(), ("final_val_loss", "best_val_loss")):
            ref = difference(summary[summary["group"] == row["group"]], summary[summary["group"] == row["baseline"]], column)
            assert row[["difference", "ci_low", "ci_high", "n", "pairing"]].tolist() == pytest.approx(
                [ref[k] for k in ("difference", "ci_low", "ci_high", "n", "pairing")])
            assert row["verdict"] == word(ref["ci_low"], ref["ci_high"])
        final = rows.iloc[0]
        assert final["difference"] == pytest.approx(-0.3) and final["verdict"] == "better"


def test_no_baseline_names_every_key_the_baseline_would_share():
    keys = KEYS + ["optim.lr"]
    groups, rows = {}, []
    for d, kind, lr in ((8, "plain", 0.1), (8, "mos", 0.2)):
        g = group_of({"model": {"hidden_size": d, "head": {"kind": kind, "components": 4}}, "optim": {"lr": lr}}, {}, keys)
        groups[g.label] = g
        rows.append({"group": g.label, "seed": 1, "final_val_loss": 1.0})
    table = verdict_table(pd.DataFrame(rows), groups, keys, "model.head.kind", "plain")
    assert table["verdict"].tolist() == ["no baseline run at the same model.hidden_size, optim.lr"]


def test_tables_without_rows_keep_their_columns():
    summary = pd.DataFrame({"group": ["a", "b"], "seed": [1, 1], "final_val_loss": [math.nan, math.nan]})
    assert list(means_table(summary).columns) == ["group", "metric", "mean", "ci_low", "ci_high", "n"]
    groups = {g: group_of({"model": {"head": {"kind": k}}}, {}, ["model.head.kind"]) for g, k in (("a", "plain"),)}
    assert list(verdict_table(summary.iloc[:1], groups, ["model.head.kind"], "model.head.kind", "plain").columns) == [
        "group", "baseline", "metric", "difference", "ci_low", "ci_high", "n", "pairing", "verdict"]


def test_a_loss_no_run_has_gets_no_verdict_row():
    summary, groups = _summary([(8, kind, 4, seed, 3.0 + seed / 10 + (kind == "mos"), math.nan)
                                for kind in ("plain", "mos") for seed in (1, 2)])
    table = verdict_table(summary, groups, KEYS, "model.head.kind", "plain")
    assert table["metric"].tolist() == ["final validation loss"]
    assert table["verdict"].tolist() == ["worse"]  # paired differences 1.0 and 1.0: no spread, above 0


def test_group_means_are_each_groups_t_interval_in_natural_order():
    summary = pd.DataFrame({"group": ["d=16", "d=16", "d=8", "d=8", "d=8"], "final_val_loss": [2.0, 2.2, 3.0, 3.1, 3.5],
                            "best_val_loss": [1.9, 2.1, 2.9, math.nan, 3.4], "final_excess_loss": [math.nan] * 5})
    table = means_table(summary)
    assert table["group"].tolist() == ["d=8", "d=8", "d=16", "d=16"]
    assert table["metric"].tolist() == ["final validation loss", "best validation loss"] * 2
    for _, row in table.iterrows():
        column = {what: c for c, what in LOSSES}[row["metric"]]
        ref = t_interval(summary.loc[summary["group"] == row["group"], column])
        assert (row["mean"], row["ci_low"], row["ci_high"], row["n"]) == pytest.approx(ref)
    assert table.iloc[1]["n"] == 2  # d=8's best loss: the missing value left out
