"""The comparison report across runs: numbers from the tables, grouping by any config key, bad input."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from lmdynamics import store
from lmdynamics.cli import main as lmdynamics_main
from lmdynamics.compare.statistics import trend_per_doubling
from lmdynamics.compare.verdict import t_interval


def main(argv: list[str]) -> int:
    """``lmdynamics compare ARGV``, as a user runs it."""
    return lmdynamics_main(["compare", *argv])


def _fake_run(root, name, d, kind, val, floor=2.0, er=None, cka=None, max_steps=100):
    """A run directory with a table, run.json and config.yaml, as a training run writes them."""
    run = root / name
    rows = []
    model = f"neox-L2-d{d}-h2" + ("" if kind == "plain" else f"+{kind}")

    def add(step, metric, value, layer=-1, component="model"):
        rows.append({"run": name, "model": model, "step": step, "tokens": step * 64, "layer": layer,
                     "component": component, "metric": metric, "value": float(value)})

    for step, v in val.items():
        add(step, "val_loss", v)
        add(step, "excess_loss", v - floor)
        add(step, "train_loss", v + 0.1)
    for step, values in (er or {}).items():
        for component, value in values.items():
            add(step, "er", value, component=component)
            add(step, "kl_uniform", value / 100, component=component)
    for (layer, component), series in (cka or {}).items():
        for step, value in series.items():
            add(step, "cka_final", value, layer=layer, component=component)
    half = len(rows) // 2
    store.append(store.table_path(run), rows[:half])
    store.append(store.table_path(run), rows[half:])  # two parts, as a run that flushed twice
    (run / "run.json").write_text(json.dumps({"run": name, "model": model, "max_steps": max_steps, "tokens_per_step": 64,
                                              "hidden_size": d, "synthetic": {"entropy_floor": floor}}))
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"model": {"hidden_size": d, "head": {"kind": kind}}}}))
    return run


def test_report_numbers_groups_and_figures(tmp_path):
    sweep = tmp_path / "sweep"
    _fake_run(sweep, "a", 8, "plain", {50: 3.0, 100: 3.1}, er={100: {"head": 7.0}},
              cka={(0, "mlp"): {20: 0.5, 40: 0.96, 60: 0.97, 80: 0.99, 100: 1.0},
                   (1, "mlp"): {20: 0.5, 40: 0.96, 60: 0.90, 80: 0.99, 100: 1.0},
                   (1, "attn"): {20: 0.5, 40: 0.5, 60: 0.97, 80: 0.99, 100: 1.0}})
    _fake_run(sweep, "b", 8, "mos4", {50: 2.8, 100: 2.6}, er={50: {"head_c00": 4.0, "head_c01": 6.0},
                                                                100: {"head_c00": 5.0, "head_c01": 7.0}})
    _fake_run(tmp_path, "c", 32, "plain", {50: 2.5, 100: 2.1})
    out = tmp_path / "cmp"
    assert main([str(sweep), str(tmp_path / "c"), "--out", str(out), "--group-by", "model.model.head.kind"]) == 0
    runs = pd.read_csv(out / "runs.csv").set_index("run")
    assert list(runs.index) == ["a", "b", "c"]
    assert runs.loc["a", "final_val_loss"] == pytest.approx(3.1) and runs.loc["a", "best_val_loss"] == pytest.approx(3.0)
    assert runs.loc["a", "best_step"] == 50 and runs.loc["a", "late_rise"] and not runs.loc["b", "late_rise"]
    assert runs.loc["b", "final_excess_loss"] == pytest.approx(0.6) and runs.loc["c", "best_excess_loss"] == pytest.approx(0.1)
    assert runs.loc["b", "final_head_er"] == pytest.approx(6.0)  # the mean of the mixture's two component heads
    assert runs.loc["a", "final_head_kl_uniform"] == pytest.approx(0.07)
    assert list(runs["group"]) == ["head=plain", "head=mos4", "head=plain"]
    report = (out / "report.md").read_text()
    # layer 0 stays >= 0.95 from step 40; layer 1: mlp from 80, attn from 60 -> mean 0.7
    assert "| a | 0.4 | 0.7 |" in report
    for fig in ("val_loss", "excess_loss", "final_vs_best", "head_er", "head_kl_uniform", "convergence_fraction"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000, fig
    assert not list(out.rglob(".*"))  # no temporary left
    assert main([str(sweep), "--out", str(tmp_path / "by_d"), "--group-by", "hidden_size"]) == 0  # a run.json field
    stats = (tmp_path / "by_d" / "report.md").read_text().split("## Final")[0]
    assert "| d=8 | 2 | 2.85 |" in stats  # two runs of d = 8, mean final validation loss (3.1 + 2.6) / 2


@pytest.mark.parametrize("args, words", [
    (["{tmp}/nothing"], "neither a run directory"),
    (["{tmp}/sweep", "--group-by", "model.model.hiden_size"], "--group_by model.model.hiden_size"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, words):
    _fake_run(tmp_path / "sweep", "a", 8, "plain", {50: 3.0})
    assert main([a.format(tmp=tmp_path) for a in args] + ["--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0]
    assert not (tmp_path / "cmp").exists()


def test_a_table_of_the_older_layout_is_compared_too(tmp_path):
    """compare reads tables through store.read_table: parts written before the index column existed read too."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    run = tmp_path / "old"
    table = store.table_path(run)
    table.mkdir(parents=True)
    rows = pd.DataFrame({"run": "old", "model": "m", "step": [10, 20, 30], "tokens": [640, 1280, 1920], "layer": -1,
                         "component": "model", "metric": "val_loss", "value": [3.0, 2.5, 2.6]})
    schema = pa.schema([(c, pa.string() if c in ("run", "model", "component", "metric") else
                         (pa.float64() if c == "value" else pa.int64())) for c in rows.columns])
    pq.write_table(pa.Table.from_pandas(rows, schema=schema, preserve_index=False), table / "part-00000000000000000001-1-x.parquet")
    (run / "run.json").write_text(json.dumps({"run": "old", "model": "m", "tokens_per_step": 64}))
    assert main([str(run), "--out", str(tmp_path / "cmp")]) == 0
    runs = pd.read_csv(tmp_path / "cmp" / "runs.csv").set_index("run")
    assert runs.loc["old", "best_val_loss"] == pytest.approx(2.5) and runs.loc["old", "final_val_loss"] == pytest.approx(2.6)


def _t_quantile_975(df: int) -> float:
    """Student-t 0.975 quantile in closed form for 1 and 2 degrees of freedom (Cauchy; (2p-1)/sqrt(2p(1-p)))."""
    p = 0.975
    return {1: math.tan(math.pi * (p - 0.5)), 2: (2 * p - 1) / math.sqrt(2 * p * (1 - p))}[df]


def test_t_interval_and_trend_match_closed_forms_and_an_independent_regression():
    mean, low, high, n = t_interval([0.5, 0.7, 0.9, float("nan")])  # NaN (a run never converged) left out
    half = _t_quantile_975(2) * 0.2 / math.sqrt(3)  # sample sd of (0.5, 0.7, 0.9) is 0.2
    assert n == 3 and (mean, low, high) == pytest.approx((0.7, 0.7 - half, 0.7 + half), abs=1e-12)
    assert t_interval([0.4])[0] == 0.4 and all(math.isnan(b) for b in t_interval([0.4])[1:3])  # one run: no bounds
    rng = np.random.default_rng(0)
    d = np.repeat([16, 32, 64, 128], 3)
    frac = 0.9 - 0.05 * np.log2(d) + rng.normal(0, 0.03, d.size)
    conv = pd.DataFrame({"run": [f"r{i}" for i in range(d.size)], "layer": 0, "fraction": frac})
    got = trend_per_doubling(conv, {f"r{i}": float(v) for i, v in enumerate(d)}).iloc[0]
    ref = stats.linregress(np.log2(d), frac)
    half = stats.t.ppf(0.975, d.size - 2) * ref.stderr
    assert got["runs"] == 12 and got["slope_per_doubling"] == pytest.approx(ref.slope, abs=1e-12)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((ref.slope - half, ref.slope + half), abs=1e-12)


def test_report_gives_convergence_per_group_with_intervals_trend_and_cka_at_fractions(tmp_path):
    """Two sizes, two runs each, one layer: the fractions (0.4, 0.6) at d = 8 and (0.2, 0.4) at d = 16."""
    curves = {"a": {20: 0.5, 40: 0.96, 60: 0.97, 80: 0.99, 100: 1.0}, "b": {20: 0.5, 40: 0.5, 60: 0.96, 80: 0.99, 100: 1.0},
              "c": {20: 0.96, 40: 0.97, 60: 0.98, 80: 0.99, 100: 1.0}, "d": {20: 0.5, 40: 0.96, 60: 0.97, 80: 0.99, 100: 1.0}}
    for name, d in (("a", 8), ("b", 8), ("c", 16), ("d", 16)):
        # a second component of the layer equal to the first, and a per-head row that must not count
        _fake_run(tmp_path / "sweep", name, d, "plain", {50: 3.0, 100: 2.9},
                  cka={(0, "mlp"): curves[name], (0, "attn"): curves[name], (0, "ov_head0"): {s: 0.0 for s in curves[name]}})
    out = tmp_path / "cmp"
    assert main([str(tmp_path / "sweep"), "--out", str(out), "--group-by", "hidden_size"]) == 0
    report = (out / "report.md").read_text()

    def cell(values, t):
        m, s = np.mean(values), np.std(values, ddof=1)
        h = t * s / math.sqrt(len(values))
        return f"{m:.3f} [{m - h:.3f}, {m + h:.3f}] (n={len(values)})"

    t1 = _t_quantile_975(1)
    assert f"| d=8 | {cell([0.4, 0.6], t1)} |" in report and f"| d=16 | {cell([0.2, 0.4], t1)} |" in report
    # slope over log2 d = (3, 3, 4, 4): -0.2 per doubling, residuals +-0.1, so se = sqrt(0.04 / 2 / 1)
    half = _t_quantile_975(2) * math.sqrt(0.04 / 2)
    assert f"| 0 | -0.200 [{-0.2 - half:.3f}, {-0.2 + half:.3f}] (n=4) |" in report
    # CKA-to-final at 25% of training: the measurement at step 20 (fraction 0.2); at 75%: step 80 (0.99 everywhere)
    row16 = next(ln for ln in report.split("## CKA-to-final at fractions")[1].splitlines() if ln.startswith("| d=16 |"))
    assert row16.split(" | ")[2] == cell([0.96, 0.5], t1) and row16.split(" | ")[4] == "0.990 [0.990, 0.990] (n=2)"
    assert (out / "figures" / "cka_final_curves.png").stat().st_size > 1000


def _seeded(root, name, d, kind, seed, final, components=4, layers_cka=0):
    """A fake run as a sweep leaves it: config with the head's kind and K, and its seed."""
    cka = {(layer, "mlp"): {20: 0.5, 60: 0.97, 100: 1.0} for layer in range(layers_cka)}
    run = _fake_run(root, name, d, kind, {50: final + 0.2, 100: final}, cka=cka)
    (run / "config.yaml").write_text(yaml.safe_dump({"seed_everything": seed, "run": {"name": name},
                                                     "model": {"model": {"hidden_size": d, "head": {"kind": kind, "components": components}}}}))
    return run


def test_default_groups_are_the_differing_keys_with_short_labels(tmp_path):
    """Seeds, run names and a plain head's unused K make no group; the label names d, the head kind and its K."""
    for seed in (1, 2):
        _seeded(tmp_path, f"p8-{seed}", 8, "plain", seed, 3.0)
        _seeded(tmp_path, f"m8-{seed}", 8, "mos", seed, 2.9, components=4)
        _seeded(tmp_path, f"m8k2-{seed}", 8, "mos", seed, 2.95, components=2)
        _seeded(tmp_path, f"p32-{seed}", 32, "plain", seed, 2.5, components=2)
    assert main([str(tmp_path), "--out", str(tmp_path / "cmp")]) == 0
    groups = pd.read_csv(tmp_path / "cmp" / "runs.csv").set_index("run")["group"]
    assert groups["p8-1"] == groups["p8-2"] == "d=8 · head=plain"
    assert groups["m8-1"] == "d=8 · head=mos K=4" and groups["m8k2-2"] == "d=8 · head=mos K=2"
    assert groups["p32-1"] == "d=32 · head=plain"  # its K = 2 is unused by a plain head
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "in 4 groups" in report and "## Group means" in report


def test_verdict_pairs_by_seed_and_falls_back_to_welch(tmp_path):
    """Differences against scipy's paired and Welch t-tests (independent references), and the words."""
    base = {1: 3.0, 2: 3.2, 3: 3.1}
    mos = {1: 2.8, 2: 3.1, 3: 2.85}  # paired by seed
    low = {4: 4.0, 5: 4.1}  # other seeds: Welch against the baseline's three
    for seed in base:
        _seeded(tmp_path / "s", f"plain-{seed}", 8, "plain", seed, base[seed])
        _seeded(tmp_path / "s", f"mos-{seed}", 8, "mos", seed, mos[seed])
    for seed in low:
        _seeded(tmp_path / "s", f"low-{seed}", 8, "low_rank", seed, low[seed])
    _seeded(tmp_path / "s", "mos32", 32, "mos", 1, 2.0)  # no plain run at d = 32
    out = tmp_path / "cmp"
    assert main([str(tmp_path / "s"), "--out", str(out), "--group-by", "hidden_size,head.kind",
                 "--baseline", "head.kind=plain"]) == 0
    verdict = pd.read_csv(out / "verdict.csv")
    row = verdict[(verdict["group"] == "d=8 · head=mos K=4") & (verdict["metric"] == "final validation loss")].iloc[0]
    ref = stats.ttest_rel([mos[s] for s in base], [base[s] for s in base]).confidence_interval(0.95)
    assert row["pairing"] == "by seed" and row["n"] == "3 pairs"
    assert (row["difference"], row["ci_low"], row["ci_high"]) == pytest.approx(
        (np.mean([mos[s] - base[s] for s in base]), ref.low, ref.high), abs=1e-12)
    assert row["verdict"] == ("better" if ref.high < 0 else "no significant difference")
    row = verdict[(verdict["group"] == "d=8 · head=low_rank") & (verdict["metric"] == "best validation loss")].iloc[0]
    ref = stats.ttest_ind(list(low.values()), list(base.values()), equal_var=False).confidence_interval(0.95)
    assert row["pairing"] == "unpaired (Welch)" and row["n"] == "2 vs 3"
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert row["verdict"] == "worse" and ref.low > 0
    assert verdict[verdict["group"] == "d=32 · head=mos K=4"]["verdict"].iloc[0].startswith("no baseline run")
    report = (out / "report.md").read_text()
    assert report.index("## Verdict") < report.index("## Per group")


def test_runs_of_different_depths_and_without_measurements_compare(tmp_path):
    """A 2-layer and a 4-layer run with CKA (a panel one group lacks; it used to end in a NaN error) and a run
    with validation loss only: the report is whole, and the sections without data say so in one line."""
    _seeded(tmp_path / "s", "shallow", 8, "plain", 1, 3.0, layers_cka=2)
    _seeded(tmp_path / "s", "deep", 32, "plain", 1, 2.5, layers_cka=4)
    run = tmp_path / "s" / "bare"
    store.append(store.table_path(run), [{"run": "bare", "model": "m", "step": s, "tokens": s, "layer": -1,
                                          "component": "model", "metric": "val_loss", "value": v} for s, v in ((5, 4.0), (9, 3.9))])
    out = tmp_path / "cmp"
    assert main([str(tmp_path / "s"), "--out", str(out)]) == 0  # bare has no config: its own group
    report = (out / "report.md").read_text()
    assert (out / "figures" / "cka_final_curves.png").stat().st_size > 1000
    assert "| deep | 0.6 | 0.6 | 0.6 | 0.6 |" in report and "| shallow | 0.6 | 0.6 |" in report
    empty = [part.splitlines()[0] for part in report.split("## Figures")[1].split("### ")[1:] if "No run has these values." in part]
    assert empty == ["head effective rank", "head KL(s / Σs ‖ uniform)"]  # no run here has head rows (catalogue labels)


def test_a_failure_while_drawing_leaves_no_output_folder(tmp_path, monkeypatch):
    from lmdynamics.report.figures import compare as compare_figures

    _seeded(tmp_path / "s", "a", 8, "plain", 1, 3.0, layers_cka=2)

    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(compare_figures, "cka_curves", broken)
    with pytest.raises(RuntimeError):
        main([str(tmp_path / "s"), "--out", str(tmp_path / "cmp")])
    assert not (tmp_path / "cmp").exists() and not list(tmp_path.glob(".cmp*"))


@pytest.mark.parametrize("args, words", [
    (["--group-by", "hidden_sise"], ["--group_by hidden_sise", "model.model.head.kind", "model.model.hidden_size"]),
    (["--baseline", "head.kinds=plain"], ["--baseline head.kinds", "model.model.head.kind"]),
    (["--baseline", "head.kind=tied"], ["--baseline model.model.head.kind=tied", "values of model.model.head.kind: mos, plain"]),
    (["--baseline", "plain"], ["--baseline 'plain'", "KEY=VALUE"]),
    (["--group-by", "model"], ["--group_by model: a config section", "model.model.head.kind"]),
])
def test_bad_grouping_is_one_line_naming_the_keys_that_exist(tmp_path, capsys, args, words):
    _seeded(tmp_path / "s", "a", 8, "plain", 1, 3.0)
    _seeded(tmp_path / "s", "b", 8, "mos", 1, 2.9)
    assert main([str(tmp_path / "s"), "--out", str(tmp_path / "cmp"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and all(w in err[0] for w in words), err
    assert not (tmp_path / "cmp").exists() and not list(tmp_path.glob(".cmp*"))
