"""Group perplexity, the overlap measure on planted curves, and the record/report CLI on synthetic runs."""

import json

import numpy as np
import pandas as pd
import pytest

from lmdynamics.commands.trajectories import main
from lmdynamics.trajectories.compare import group_perplexity, overlap_table, trace_groups, x_values
from lmdynamics.trajectories.storage import TokenTable, Trajectories, TrajectoryStore
from tests.helpers.trajectories import two_synthetic_runs

STEPS = np.array([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 3000, 4000])


def test_group_perplexity_is_exp_of_the_mean_loss_not_a_mean_of_perplexities():
    losses = np.array([[1.0, 2.0], [3.0, 2.0], [9.0, 9.0]])
    got = group_perplexity(losses, np.array([True, True, False]))
    np.testing.assert_allclose(got, [np.exp(2.0), np.exp(2.0)])
    assert got[0] < (np.exp(1.0) + np.exp(3.0)) / 2  # the mean of perplexities would be larger (Jensen)
    assert np.isnan(group_perplexity(losses, np.zeros(3, bool))).all()


def _traj(name, steps, losses, val_loss, params, tokens_per_step=100):
    n = losses.shape[0]
    return Trajectories(losses.astype(np.float32), steps, steps * tokens_per_step, np.exp(val_loss), TokenTable(
        np.arange(n), np.ones(n), np.zeros(n), np.zeros(n)), {"model": name, "parameters": params})


def test_curves_that_are_one_function_of_validation_perplexity_overlap_exactly():
    """Two sizes whose token losses are the same function of their validation loss, reached at different
    steps: the spread at equal validation perplexity is 0, at equal step it is not; FLOPs use 6 N T."""
    def val_small(s):
        return 6.0 - 2.0 * np.log1p(s) / np.log1p(4000)

    def val_large(s):
        return 6.0 - 3.0 * np.log1p(s) / np.log1p(4000)

    w = np.array([[1.0], [0.5], [1.5]])
    small = _traj("small", STEPS, w * val_small(STEPS)[None], val_small(STEPS), 1000)
    large = _traj("large", STEPS, w * val_large(STEPS)[None], val_large(STEPS), 8000)
    groups = {"a": np.array([True, False, False]), "bc": np.array([False, True, True])}
    traced = trace_groups([small, large], groups)
    assert len(traced) == 2 * 2 * len(STEPS)
    np.testing.assert_allclose(x_values(large, "flops"), 6.0 * 8000 * STEPS * 100)
    table = overlap_table(traced).set_index("group")
    assert table.loc["a", "spread_val_ppl"] == pytest.approx(0.0, abs=1e-6)
    assert table.loc["bc", "spread_val_ppl"] == pytest.approx(0.0, abs=1e-6)
    assert table.loc["a", "spread_step"] > 0.1 and table.loc["a", "ratio_val_ppl_over_step"] < 1e-4
    assert table.loc["a", "spread_step"] == pytest.approx(table.loc["a", "spread_tokens"])  # same tokens per step
    # a different curve per size at equal perplexity: the spread there is the gap itself (std of two = half the gap)
    shifted = _traj("large", STEPS, w * val_large(STEPS)[None] + 0.2, val_large(STEPS), 8000)
    t2 = overlap_table(trace_groups([small, shifted], {"a": groups["a"]})).set_index("group")
    assert t2.loc["a", "spread_val_ppl"] == pytest.approx(0.1, rel=1e-6)


def test_different_evaluation_tokens_are_refused():
    a = _traj("a", STEPS, np.ones((3, len(STEPS))), np.ones(len(STEPS)), 1)
    b = _traj("b", STEPS, np.ones((4, len(STEPS))), np.ones(len(STEPS)), 1)
    with pytest.raises(ValueError, match="different evaluation tokens"):
        trace_groups([a, b], {"all": np.ones(3, bool)})


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, local_text):
    root = tmp_path_factory.mktemp("traj")
    small, large = two_synthetic_runs(root, local_text)
    return root, small, large, local_text


def test_record_then_report_through_the_cli(two_runs, tmp_path, capsys):
    root, small, large, text = two_runs
    out = tmp_path / "store"
    args = ["record", "--source", str(small), "--source", str(large), "--text", str(text), "--blocks", "4",
            "--block-tokens", "33", "--out", str(out)]
    assert main(args) == 0
    a = TrajectoryStore(out / "small").read()
    assert a.losses.shape == (4 * 32, 15) and list(a.steps) == [0, 1, 2, 4, 8, 16, 32, 64, 100, 150, 200, 250, 300, 350, 400]
    assert np.allclose(a.val_ppl, np.exp(a.losses.astype(np.float64).mean(0)), rtol=1e-3)  # on the evaluation text
    assert a.meta["parameters"] < TrajectoryStore(out / "large").read().meta["parameters"]
    before = (out / "small" / "losses.f16").stat().st_size
    assert main(args) == 0  # rerun: every step already stored, nothing appended
    assert (out / "small" / "losses.f16").stat().st_size == before
    rep = tmp_path / "report"
    assert main(["report", "--store", str(out), "--out", str(rep)]) == 0
    for name in ("report.md", "shares.csv", "overlap.csv", "group_perplexity.csv", "double_descent.csv",
                 "class_shares.png", "group_ppl_vs_val_ppl.png", "group_ppl_vs_flops.png"):
        assert (rep / name).is_file(), name
    shares = pd.read_csv(rep / "shares.csv")
    assert set(shares["breakdown"]) == {"all", "token_class", "frequency"}
    np.testing.assert_allclose(shares.groupby(["model", "start_fraction", "breakdown", "group"])["share"].sum(), 1.0)
    traced = pd.read_csv(rep / "group_perplexity.csv")
    row = traced[(traced.model == "small") & (traced.group == "all")].sort_values("step")
    np.testing.assert_allclose(row["group_ppl"], a.val_ppl, rtol=1e-3)  # all tokens = the evaluation text
    assert "spread_val_ppl" in capsys.readouterr().out
    # frequency buckets from a counts file: one id counted 500 times, the rest 5 times
    ids = a.token_table.ids
    counts = {str(i): 5 for i in set(ids.tolist())} | {str(ids[0]): 500}
    (tmp_path / "counts.json").write_text(json.dumps(counts))
    assert main(["report", "--store", str(out), "--out", str(tmp_path / "rep2"), "--counts", str(tmp_path / "counts.json"),
                 "--start-fractions", "0.2"]) == 0
    freq = pd.read_csv(tmp_path / "rep2" / "shares.csv")
    freq = freq[(freq.breakdown == "frequency") & (freq.model == "small")].groupby("group")["count"].sum()
    assert freq.to_dict() == {"1-9": int((ids != ids[0]).sum()), "100-999": int((ids == ids[0]).sum())}


def test_bad_input_one_line_nothing_written(two_runs, tmp_path, capsys, pythia_tokenizer_file):
    root, small, large, text = two_runs
    out = tmp_path / "store"
    cases = [
        (["record", "--source", str(small), "--text", str(text), "--blocks", "100000", "--block-tokens", "64",
          "--out", str(out)], "fewer than the 100000 x 64"),
        (["record", "--source", str(small), "--text", str(text), "--blocks", "2", "--block-tokens", "16",
          "--tokenizer", str(pythia_tokenizer_file), "--out", str(out)], "differs from the evaluation text's tokenizer"),
    ]
    for args, words in cases:
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1, err
        assert not out.exists()
    assert main(["record", "--source", str(small), "--text", str(text), "--blocks", "2", "--block-tokens", "16",
                 "--steps", "0,1,2,4", "--out", str(out)]) == 0
    capsys.readouterr()
    rep = tmp_path / "rep"
    assert main(["report", "--store", str(out), "--out", str(rep)]) == 2  # 4 steps: the 70% window has 1
    err = capsys.readouterr().err.strip()
    assert "needs >= 3" in err and len(err.splitlines()) == 1 and not rep.exists()


def test_hub_revisions_record_the_same_values_as_the_run_directory(two_runs, tmp_path):
    """A run's checkpoints imported into a hub cache as revisions stepN: the hub source gives the same store."""
    from lmdynamics.checkpoints import add_to_hf_cache

    root, small, large, text = two_runs
    cache = tmp_path / "hub"
    steps = [0, 100, 200, 400]
    for s in steps:
        add_to_hf_cache(small / "checkpoints" / f"step{s:08d}", "org/small", f"step{s}", cache)
    common = ["--text", str(text), "--blocks", "2", "--block-tokens", "17", "--steps", ",".join(map(str, steps))]
    assert main(["record", "--source", str(small), *common, "--out", str(tmp_path / "run")]) == 0
    assert main(["record", "--source", "org/small", "--hub-cache", str(cache), *common, "--out", str(tmp_path / "hub-out")]) == 0
    a, b = TrajectoryStore(tmp_path / "run" / "small").read(), TrajectoryStore(tmp_path / "hub-out" / "org--small").read()
    np.testing.assert_array_equal(a.losses, b.losses)
    np.testing.assert_array_equal(a.val_ppl, b.val_ppl)
    assert b.model == "org/small" and list(b.steps) == steps


def test_x_axes_are_step_tokens_six_n_t_and_validation_perplexity():
    steps = np.array([0, 10, 20])
    t = Trajectories(np.ones((2, 3), np.float32), steps, np.array([0, 1000, 2500]), np.array([50.0, 20.0, 12.5]),
                     TokenTable(np.arange(2), np.ones(2), np.zeros(2), np.zeros(2)), {"model": "m", "parameters": 7})
    for axis, want in (("step", [0, 10, 20]), ("tokens", [0, 1000, 2500]), ("flops", [0, 6 * 7 * 1000, 6 * 7 * 2500]),
                       ("val_ppl", [50.0, 20.0, 12.5])):
        got = x_values(t, axis)
        assert got.dtype == np.float64 and list(got) == want, axis
    with pytest.raises(ValueError, match="unknown x-axis 'loss'; choose from step, tokens, flops, val_ppl"):
        x_values(t, "loss")


def test_spread_is_the_mean_across_model_std_of_log_group_perplexity_on_the_common_log_range():
    """Reference: the curves on 50 points spread evenly in log x over the range both cover, interpolated
    linearly in log x; std across models (ddof 0) at each point, averaged. Checkpoints at x <= 0 and groups
    without tokens (NaN) are left out; fewer than two models, or no common range, give NaN."""
    from lmdynamics.trajectories.compare import spread

    rows = []
    curves = {"a": ([0, 10, 100, 1000], [9.0, 5.0, 4.0, 3.0]), "b": ([0, 30, 300, 3000, 30000], [9.0, 6.0, 4.5, 3.5, 3.0])}
    for model, (xs, ppl) in curves.items():
        rows += [{"model": model, "group": "g", "step": x, "group_ppl": p} for x, p in zip(xs, ppl)]
    rows += [{"model": "b", "group": "g", "step": 50, "group_ppl": np.nan}]  # a group without tokens at a checkpoint
    rows += [{"model": "c", "group": "other", "step": x, "group_ppl": p} for x, p in ((10, 3.0), (20, 2.0))]
    frame = pd.DataFrame(rows)
    grid = np.linspace(np.log(30), np.log(1000), 50)
    ys = [np.interp(grid, np.log(np.array(xs[1:], float)), np.log(ppl[1:])) for xs, ppl in curves.values()]
    want = float(np.mean(np.abs(ys[0] - ys[1]) / 2))  # std of two values = half their distance
    assert spread(frame, "g", "step") == pytest.approx(want, rel=1e-12)
    assert spread(frame, "g", "step", points=7) != pytest.approx(want, rel=1e-6)
    assert np.isnan(spread(frame, "other", "step"))  # one model
    apart = pd.DataFrame([{"model": m, "group": "g", "step": x, "group_ppl": 2.0} for m, xs in (("a", [1, 2]), ("b", [3, 4]))
                          for x in xs])
    assert np.isnan(spread(apart, "g", "step"))  # no common range
    touching = pd.DataFrame([{"model": m, "group": "g", "step": x, "group_ppl": 2.0} for m, xs in (("a", [1, 2]), ("b", [2, 4]))
                             for x in xs])
    assert np.isnan(spread(touching, "g", "step"))  # a single common point is no range


def test_overlap_ratio_is_nan_when_the_spread_at_equal_step_is_zero():
    rows = [{"model": m, "group": "g", **{a: float(x) for a in ("step", "tokens", "flops")}, "val_ppl": v, "group_ppl": 3.0}
            for m, vs in (("a", [9.0, 5.0]), ("b", [8.0, 4.0])) for x, v in zip([10, 20], vs)]
    table = overlap_table(pd.DataFrame(rows)).set_index("group")
    assert table.loc["g", "spread_step"] == 0.0 and np.isnan(table.loc["g", "ratio_val_ppl_over_step"])
    assert list(table.columns) == ["spread_step", "spread_tokens", "spread_flops", "spread_val_ppl", "ratio_val_ppl_over_step"]


def test_traced_rows_carry_every_axis_the_group_perplexity_and_its_token_count():
    steps = np.array([0, 4, 8])
    losses = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [0.5, 0.5, 0.5]])
    t = _traj("m", steps, losses, np.array([1.0, 1.5, 2.0]), 5, tokens_per_step=10)
    traced = trace_groups([t], {"first": np.array([True, False, False]), "two": np.array([True, True, False])})
    two = traced[traced.group == "two"].sort_values("step")
    assert list(two.step) == [0, 4, 8] and list(two.tokens) == [0, 40, 80] and list(two.flops) == [0, 6 * 5 * 40, 6 * 5 * 80]
    np.testing.assert_allclose(two.val_ppl, np.exp([1.0, 1.5, 2.0]))
    np.testing.assert_allclose(two.group_ppl, np.exp([2.0, 2.0, 2.0]))
    assert set(two.n_tokens) == {2} and set(traced[traced.group == "first"].n_tokens) == {1}
    assert set(traced.model) == {"m"}


def test_overlap_ratio_is_the_spread_at_equal_perplexity_over_the_spread_at_equal_step():
    rows = [{"model": m, "group": "g", "step": x, "tokens": x, "flops": x, "val_ppl": x * f, "group_ppl": p}
            for m, f, ps in (("a", 1.0, [9.0, 5.0, 4.0]), ("b", 2.0, [8.0, 6.0, 3.0])) for x, p in zip([10.0, 20.0, 40.0], ps)]
    table = overlap_table(pd.DataFrame(rows)).set_index("group")
    s_step, s_ppl = table.loc["g", "spread_step"], table.loc["g", "spread_val_ppl"]
    assert s_step > 0.05 and s_ppl > 0.05 and s_step != pytest.approx(s_ppl, rel=0.05)
    assert table.loc["g", "ratio_val_ppl_over_step"] == pytest.approx(s_ppl / s_step, rel=1e-12)
