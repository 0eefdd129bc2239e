"""The runs of ``lmdynamics compare`` and their final numbers, function by function (fast): each number read back
from rows written here, in an order other than the steps'. The command's report around them:
tests/test_compare.py."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from lmdynamics import catalogue, store
from lmdynamics.compare.runs import (RISE_MARGIN, CompareError, Run, cka_curves, convergence_fractions, curve_series,
                                     curve_title, final_and_best, find_runs, load_runs, lookup, metrics_read, summarize)


def _rows(spec):
    """(step, layer, component, metric, value) tuples as tidy rows of run ``r``."""
    return pd.DataFrame([{"run": "r", "model": "m", "step": s, "tokens": 10 * s, "layer": layer, "component": c,
                          "metric": metric, "index": -1, "value": float(v)} for s, layer, c, metric, v in spec])


def _run(spec, info=None, config=None, name="r"):
    return Run(name, None, info or {}, config or {}, _rows(spec))


def test_final_and_best_read_the_model_curve_by_step():
    table = _rows([(30, -1, "model", "val_loss", 2.5), (10, -1, "model", "val_loss", 3.0),
                   (20, -1, "model", "val_loss", 2.2), (40, -1, "head_c00", "val_loss", 1.0),  # not the model's
                   (50, -1, "model", "train_loss", 0.5)])
    assert final_and_best(table) == (2.5, 2.2, 20)
    assert final_and_best(table, "train_loss") == (0.5, 0.5, 50)
    assert final_and_best(table, "excess_loss") is None


@pytest.mark.parametrize("final, late", [(2.2 + RISE_MARGIN + 0.001, True), (2.2 + RISE_MARGIN - 0.001, False), (2.2, False),
                                         (2.2 + RISE_MARGIN, False)])  # exactly the margin: not more
def test_a_late_rise_is_a_final_loss_more_than_the_margin_above_the_best(final, late):
    row = summarize(_run([(20, -1, "model", "val_loss", 2.2), (10, -1, "model", "val_loss", 3.0),
                          (30, -1, "model", "val_loss", final)]))
    assert row["late_rise"] is late and row["final_val_loss"] == final and row["best_step"] == 20


def test_the_summary_of_a_run_reads_each_number_at_its_last_step():
    spec = [(s, -1, "model", "val_loss", 3.0 - s / 100) for s in (40, 10, 30, 20)]
    spec += [(s, -1, "model", "excess_loss", 1.0 - s / 100) for s in (40, 10, 30, 20)]
    spec += [(s, -1, c, m, v * s) for s in (40, 20, 30) for c, v in (("head_c00", 1.0), ("head_c01", 3.0))
             for m in ("er", "kl_uniform")]  # a mixture: its heads' mean
    spec += [(s, -1, "head", "saturation_event", 1.0) for s in (20, 30)] + [(45, 0, "mlp", "cka_final", 1.0)]
    info = {"model": "neox", "hidden_size": 8, "parameters": 1234, "seed": 3, "synthetic": {"entropy_floor": 1.5}}
    row = summarize(_run(spec, info=info, config={"seed_everything": 7}))
    assert row == {"run": "r", "model": "neox", "seed": 7, "hidden_size": 8, "parameters": 1234, "steps": 45,
                   "final_val_loss": pytest.approx(2.6), "best_val_loss": pytest.approx(2.6), "best_step": 40,
                   "late_rise": False, "entropy_floor": 1.5, "final_excess_loss": pytest.approx(0.6),
                   "best_excess_loss": pytest.approx(0.6), "final_head_er": pytest.approx(80.0),
                   "final_head_kl_uniform": pytest.approx(80.0), "saturation_events": 2}


def test_the_seed_comes_from_run_json_when_the_config_has_none_and_an_empty_run_has_no_numbers():
    assert summarize(_run([(5, -1, "model", "val_loss", 1.0)], info={"seed": 0}))["seed"] == 0
    row = summarize(Run("e", None, {}, {}, store.to_frame([])))
    assert row["steps"] == 0 and row["saturation_events"] == 0 and "final_val_loss" not in row
    assert row["seed"] is None and row["entropy_floor"] is None and "final_head_er" not in row and row["model"] == ""


def test_cka_curves_average_each_layers_components_at_each_step_over_the_training_length():
    spec = [(s, layer, c, "cka_final", v) for s, vs in ((50, (0.4, 0.6)), (100, (1.0, 1.0))) for layer in (0, 1)
            for c, v in zip(("mlp", "attn"), vs)]
    spec += [(50, 0, "ov_head0", "cka_final", 0.0), (50, -1, "head", "cka_final", 0.0)]  # per-head and model rows: out
    no_cka = _run([(5, -1, "model", "val_loss", 1.0)], name="q")  # first: the runs after it still count
    curves = cka_curves([no_cka, _run(spec, info={"max_steps": 200}), _run(spec, name="s")])
    r = curves[curves["run"] == "r"].sort_values(["layer", "step"])
    assert r[["layer", "step", "fraction", "value"]].values.tolist() == [[0, 50, 0.25, 0.5], [0, 100, 0.5, 1.0],
                                                                        [1, 50, 0.25, 0.5], [1, 100, 0.5, 1.0]]
    assert curves[curves["run"] == "s"]["fraction"].max() == 1.0  # no max_steps: over the last measured step
    assert list(cka_curves([_run([(5, -1, "model", "val_loss", 1.0)])]).columns) == ["run", "layer", "step", "fraction", "value"]


def test_the_cka_curves_of_several_runs_are_one_table_numbered_from_zero():
    """Each run's rows follow the previous run's: the index is 0..n-1, no label repeated across runs."""
    spec = [(s, layer, "mlp", "cka_final", 0.5) for s in (50, 100) for layer in (0, 1)]
    curves = cka_curves([_run(spec, name="a"), _run(spec, name="b")])
    assert len(curves) == 8 and curves.index.equals(pd.RangeIndex(8))


def test_convergence_fractions_are_each_layers_mean_over_its_components():
    spec = [(s, 0, "mlp", "cka_final", v) for s, v in ((25, 0.5), (50, 0.97), (75, 0.99), (100, 1.0))]
    spec += [(s, 0, "attn", "cka_final", v) for s, v in ((25, 0.5), (50, 0.5), (75, 0.99), (100, 1.0))]
    spec += [(s, 0, "ov_head0", "cka_final", 0.0) for s in (25, 50, 75, 100)]  # per-head rows: out
    spec += [(s, 1, "mlp", "cka_final", v) for s, v in ((25, 0.96), (50, 0.97), (75, 0.99), (100, 1.0))]
    no_cka = _run([(5, -1, "model", "val_loss", 1.0)], name="q")  # first: the runs after it still count
    table = convergence_fractions([no_cka, _run(spec, info={"max_steps": 200})], 0.95)
    assert table.values.tolist() == [["r", 0, pytest.approx(np.mean([0.25, 0.375]))], ["r", 1, 0.125]]  # of 200 steps
    table = convergence_fractions([_run(spec)], 0.5)  # a lower threshold; no max_steps: over the last step (100)
    assert table.values.tolist() == [["r", 0, 0.25], ["r", 1, 0.25]]
    assert list(convergence_fractions([no_cka], 0.95).columns) == ["run", "layer", "fraction"]


def _write_run(root, name, rows=True):
    run = root / name
    run.mkdir(parents=True)
    if rows:
        store.append(store.table_path(run), [{"run": name, "model": "m", "step": 1, "tokens": 1, "layer": -1,
                                               "component": "model", "metric": "val_loss", "value": 2.0}])
    return run


def test_runs_are_found_in_a_run_directory_or_a_directory_of_runs_once(tmp_path):
    b, a = _write_run(tmp_path / "sweep", "b"), _write_run(tmp_path / "sweep", "a")
    _write_run(tmp_path / "sweep", "empty", rows=False)
    one = _write_run(tmp_path, "one")
    other = _write_run(tmp_path / "other", "c")
    assert find_runs([str(tmp_path / "sweep"), str(tmp_path / "other"), str(one)]) == [a, b, other, one]
    with pytest.raises(CompareError, match="given twice"):
        find_runs([str(tmp_path / "sweep"), str(a)])
    with pytest.raises(CompareError, match="neither a run directory"):
        find_runs([str(tmp_path / "sweep" / "empty")])


def test_a_run_is_read_with_its_name_info_config_and_the_rows_compare_uses(tmp_path):
    run = _write_run(tmp_path, "dir")
    store.append(store.table_path(run), [{"run": "dir", "model": "m", "step": 1, "tokens": 1, "layer": 0,
                                          "component": "mlp", "metric": "not_compared", "value": 1.0}])
    (run / "run.json").write_text(json.dumps({"run": "named", "max_steps": 9}))
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"hidden_size": 8}}))
    bare = _write_run(tmp_path, "bare")
    (loaded, plain), = [load_runs([run, bare])]
    assert (loaded.name, loaded.info["max_steps"], loaded.config, loaded.path) == ("named", 9, {"model": {"hidden_size": 8}}, run)
    assert loaded.table["metric"].tolist() == ["val_loss"]  # only the metrics compare reads
    assert (plain.name, plain.info, plain.config) == ("bare", {}, {})
    assert lookup(loaded, "max_steps") == 9 and lookup(loaded, "model.hidden_size") == 8  # run.json, then config
    assert lookup(loaded, "model") == {"hidden_size": 8} and lookup(plain, "max_steps") is None


def test_a_run_config_is_read_without_libyaml(tmp_path, monkeypatch):
    """PyYAML built without libyaml has no CSafeLoader: the config is read by the pure-Python safe loader."""
    monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    run = _write_run(tmp_path, "run")
    text = yaml.safe_dump({"model": {"hidden_size": 8, "head": {"kind": "plain"}}, "seed_everything": 3})
    (run / "config.yaml").write_text(text)
    (loaded,) = load_runs([run])
    assert loaded.config == yaml.safe_load(text)


def test_the_compared_curves_are_read_as_each_measurement_says():
    assert set(metrics_read()) >= {"val_loss", "excess_loss", "er", "kl_uniform", "cka_final", "saturation_event",
                                   *(m.name for m in catalogue.compared())}

    def measurement(compare):
        return catalogue.Measurement("q", "spectrum", "q", compare=compare)

    table = _rows([(20, 0, "mlp", "q", 1.0), (20, 1, "attn", "q", 3.0), (10, 0, "mlp", "q", 5.0),
                   (10, -1, "head", "q", 100.0)])  # the model-level row is no layer's
    assert curve_series(table, measurement("layers")).values.tolist() == [[10, 5.0], [20, 2.0]]
    table = _rows([(20, -1, "head_c00", "q", 1.0), (20, -1, "head_c01", "q", 3.0), (10, -1, "head_c00", "q", 5.0),
                   (10, -1, "head_c01", "q", 7.0), (10, 0, "mlp", "q", 100.0)])  # a mixture: its heads' mean
    assert curve_series(table, measurement("head")).values.tolist() == [[10, 6.0], [20, 2.0]]
    table = _rows([(20, -1, "model", "q", 1.0), (10, -1, "model", "q", 3.0), (15, -1, "head", "q", 9.0)])
    assert curve_series(table, measurement("model"))[["step", "value"]].values.tolist() == [[10, 3.0], [20, 1.0]]


def test_figure_titles_say_where_a_curve_is_read():
    def measurement(compare):
        return catalogue.Measurement("q", "spectrum", "effective rank", compare=compare)

    assert curve_title(measurement("head")) == "head effective rank"
    assert curve_title(measurement("layers")) == "effective rank (mean over the layers' weight matrices)"
    assert curve_title(measurement("model")) == "effective rank"
