"""Where the saturation analysis reads its series and head signals (``saturation.analyze``): a tidy table's
model-level rows of ``metric`` (or ``<task>/<metric>``), one row per model and step; ``--measures``' head signals
joined by model name, with or without the hub organisation, never replacing the analysed metric."""

import numpy as np
import pytest

from lmdynamics import store
from lmdynamics.saturation.analyze import InputError, detect_all, from_evals, from_table, with_measures

STEPS = np.arange(0, 11) * 100
LOSS = np.r_[np.linspace(5, 3, 6), 3.0 * np.array([1.0, 1.0, 1.1, 1.2, 1.3])]  # saturates, onset 700


def rows(model, metric, values, run=None, layer=-1, component="model"):
    return [dict(run=run or model, model=model, step=int(s), tokens=int(s) * 10, layer=layer, component=component,
                 metric=metric, index=-1, value=float(v)) for s, v in zip(STEPS, values)]


def test_head_signals_from_measures_join_by_name_without_the_organisation(tmp_path):
    store.append(store.table_path(tmp_path / "run"), rows("pythia-160m", "val_loss", LOSS))
    er = 2.0 / (1 + 0.3 * np.clip((STEPS - 400) // 100, 0, None))  # the head's effective rank falls from step 400
    measures = rows("EleutherAI/pythia-160m", "er", er, component="head")
    measures += rows("EleutherAI/pythia-160m", "val_loss", LOSS * 10)  # the analysed metric: never taken from here
    store.append(store.table_path(tmp_path / "measures"), measures)
    series = with_measures(from_table(tmp_path / "run", "val_loss"), tmp_path / "measures")
    assert series.source.endswith(f"with measures from {tmp_path / 'measures'}")
    result = detect_all(series).set_index("model").loc["pythia-160m"]
    assert result.final_value == pytest.approx(LOSS[-1]) and result.onset_step == 700
    assert result.er_moved and result.er_onset_step == 400 and result.er_moved_first
    assert result.kl_uniform_moved is None  # not in either table
    store.append(store.table_path(tmp_path / "strangers"), rows("EleutherAI/pythia-999m", "er", er, component="head"))
    with pytest.raises(InputError, match="none of its models"):
        with_measures(from_table(tmp_path / "run", "val_loss"), tmp_path / "strangers")


def test_a_task_names_the_metric_and_one_row_per_model_and_step_is_required(tmp_path):
    store.append(store.table_path(tmp_path / "run"), rows("m", "lambada/acc", 1 / LOSS) + rows("m", "acc", LOSS))
    series = from_table(tmp_path / "run", "acc", task="lambada")
    assert series.metric == "lambada/acc" and np.allclose(series.rows.sort_values("step").value, 1 / LOSS)
    assert from_table(tmp_path / "run", "acc").metric == "acc"
    # the same model from two runs in one table: refused, naming the model and the step
    store.append(store.table_path(tmp_path / "two"), rows("m", "val_loss", LOSS, run="a") + rows("m", "val_loss", LOSS * 1.01, run="b"))
    with pytest.raises(InputError, match="val_loss of model m has several rows at step 0"):
        from_table(tmp_path / "two", "val_loss")


def _eval_files(directory, values, flip_direction):
    """lm-eval 0.4 result files of model ``m`` at STEPS, demo_lastword/perplexity = ``values``; the files' own
    direction map says higher is better when ``flip_direction`` (a name guess would say lower)."""
    import json
    from pathlib import Path
    base = json.loads((Path(__file__).parent / "data" / "lm_eval" / "lm-eval-0.4_demo_step600.json").read_text())
    for step, value in zip(STEPS, values):
        data = json.loads(json.dumps(base))
        data["results"]["demo_lastword"]["perplexity,none"] = float(value)
        data["higher_is_better"]["demo_lastword"]["perplexity"] = bool(flip_direction)
        (directory / "m").mkdir(parents=True, exist_ok=True)
        (directory / "m" / f"demo_step{int(step)}.json").write_text(json.dumps(data))
    return directory


def test_eval_results_carry_their_tokens_and_their_own_directions(tmp_path):
    rising = 10 + STEPS / 100  # worse and worse if lower is better, better and better otherwise
    series = from_evals(_eval_files(tmp_path / "a", rising, False), "demo_lastword", "perplexity", tokens_per_step=256)
    assert series.ingested and series.metric == "demo_lastword/perplexity"
    assert (series.rows.tokens == series.rows.step * 256).all()
    assert detect_all(series).iloc[0].saturated  # lower is better (the name's guess, and these files' map)
    # the same values in files that declare higher-is-better: the end is the best, nothing saturates
    flipped = from_evals(_eval_files(tmp_path / "b", rising, True), "demo_lastword", "perplexity")
    assert flipped.directions["demo_lastword/perplexity"] is True
    result = detect_all(flipped).iloc[0]
    assert bool(result.higher_is_better) and not result.saturated and result.best_step == 1000
    # a direction given explicitly (the command's --higher-is-better) wins over the files' map, both ways
    assert detect_all(flipped, higher_is_better=False).iloc[0].saturated
    assert not detect_all(series, higher_is_better=True).iloc[0].saturated
    with pytest.raises(InputError, match="task 'nope' is in no result file"):
        from_evals(tmp_path / "a", "nope", "perplexity")
    with pytest.raises(InputError, match="available: acc, acc_stderr, perplexity, perplexity_stderr"):
        from_evals(tmp_path / "a", "demo_lastword", "bleu")


def test_min_fraction_and_margin_reach_the_curves_verdict(tmp_path):
    """The curve's own best checkpoint and verdict follow min_fraction and margin (the head signals' are checked
    in test_saturation_signals_direction.py)."""
    lucky = LOSS.copy()
    lucky[0] = 1.0  # step 0 far better than anything later: the best only when min_fraction is 0
    store.append(store.table_path(tmp_path / "run"), rows("m", "val_loss", lucky))
    series = from_table(tmp_path / "run", "val_loss")
    default = detect_all(series).iloc[0]
    assert default.best_step == 500 and default.saturated and default.gap == pytest.approx(0.3)
    from_start = detect_all(series, min_fraction=0.0).iloc[0]
    assert from_start.best_step == 0 and from_start.gap == pytest.approx(LOSS[-1] / 1.0 - 1)
    assert not detect_all(series, margin=0.35).iloc[0].saturated  # a 30% rise under a 35% margin
    assert detect_all(series, margin=0.25).iloc[0].saturated


def test_a_series_too_short_is_refused_naming_metric_model_and_source(tmp_path):
    store.append(store.table_path(tmp_path / "run"), rows("m", "val_loss", LOSS)[:2])
    with pytest.raises(InputError, match=r"^val_loss of m: 2 checkpoint\(s\).*\(from tidy table "):
        detect_all(from_table(tmp_path / "run", "val_loss"))


def test_name_value_pairs_take_the_value_after_the_last_equals_and_refuse_anything_else():
    from lmdynamics.saturation.analyze import parse_pairs
    assert parse_pairs("pythia-160m=1.6e8, pythia-1b = 1e9 ,,", "--params") == {"pythia-160m": 1.6e8, "pythia-1b": 1e9}
    assert parse_pairs("a=b=3", "--params") == {"a=b": 3.0}  # a name may hold '=': the number is after the last
    assert parse_pairs("", "--params") == {} and parse_pairs(None, "--params") == {}
    assert parse_pairs("d=768", "--hidden_sizes", int) == {"d": 768}
    for bad in ("pythia-1b", "=3", "a=x", "a=", "a=1,b"):
        with pytest.raises(InputError, match=r"^--params: '.*' is not name=number$"):
            parse_pairs(bad, "--params")
    with pytest.raises(InputError, match=r"^--hidden_sizes: 'd=7.5' is not name=number$"):
        parse_pairs("d=7.5", "--hidden_sizes", int)


def test_an_error_lists_up_to_forty_available_names_sorted_then_how_many_there_are(tmp_path):
    names = [f"m{i:02d}" for i in range(41)]
    for count in (40, 41):
        store.append(store.table_path(tmp_path / str(count)), [r for n in names[:count] for r in rows("m", n, LOSS)])
        with pytest.raises(InputError) as err:
            from_table(tmp_path / str(count), "bleu")
        listed = str(err.value).partition("available: ")[2]
        assert listed == ", ".join(names[:40]) + ("" if count == 40 else ", ... (41 in all)")


def test_a_task_name_may_hold_a_slash_the_metric_is_after_the_last(tmp_path):
    """lm-eval task names are free text; the metric is the part after the last '/' everywhere."""
    import json
    directory = _eval_files(tmp_path / "evals", 10 + STEPS / 100, False)
    for path in (directory / "m").iterdir():
        data = json.loads(path.read_text())
        for key in ("results", "higher_is_better"):
            data[key]["suite/lastword"] = data[key].pop("demo_lastword")
        path.write_text(json.dumps(data))
    series = from_evals(directory, "suite/lastword", "perplexity")
    assert series.metric == "suite/lastword/perplexity" and len(series.rows) == len(STEPS)
    result = detect_all(series).iloc[0]
    assert (result.task, result.metric) == ("suite/lastword", "perplexity")
    with pytest.raises(InputError, match=r"available: acc, acc_stderr, perplexity, perplexity_stderr$"):
        from_evals(directory, "suite/lastword", "bleu")
    with pytest.raises(InputError, match=r"task 'suite' is in no result file .*available: suite/lastword$"):
        from_evals(directory, "suite", "perplexity")
    # the same in a tidy table
    store.append(store.table_path(tmp_path / "run"), rows("m", "suite/lastword/acc", 1 / LOSS))
    result = detect_all(from_table(tmp_path / "run", "acc", task="suite/lastword")).iloc[0]
    assert (result.task, result.metric) == ("suite/lastword", "acc")


def test_measures_keep_the_results_own_directions_source_and_ingestion_and_match_full_names(tmp_path):
    """--measures beside --evals: the files' direction map still decides (here: higher is better, so a rising
    perplexity is not saturated), the rows are still written out as ingested, and a measures table naming the
    model exactly as the results do (organisation included) is joined."""
    rising = 10 + STEPS / 100
    evals = from_evals(_eval_files(tmp_path / "evals", rising, True), "demo_lastword", "perplexity")
    er = 2.0 / (1 + 0.3 * np.clip((STEPS - 400) // 100, 0, None))
    store.append(store.table_path(tmp_path / "measures"), rows("m", "er", er, component="head"))
    series = with_measures(evals, tmp_path / "measures")
    assert series.ingested and series.directions == evals.directions
    assert series.source == f"lm-eval results under {tmp_path / 'evals'} with measures from {tmp_path / 'measures'}"
    result = detect_all(series).iloc[0]
    assert bool(result.higher_is_better) and not result.saturated and result.er_moved
    # organisation and all: the analysed model is "org/m"
    store.append(store.table_path(tmp_path / "run"), rows("org/m", "val_loss", LOSS))
    store.append(store.table_path(tmp_path / "full"), rows("org/m", "er", er, component="head"))
    joined = detect_all(with_measures(from_table(tmp_path / "run", "val_loss"), tmp_path / "full")).iloc[0]
    assert joined.model == "org/m" and joined.er_moved and joined.er_onset_step == 400


def test_a_series_from_result_files_too_short_names_the_files(tmp_path):
    directory = _eval_files(tmp_path / "evals", [10.0, 11.0], False)
    with pytest.raises(InputError, match=rf"\(from lm-eval results under {tmp_path / 'evals'}\)$"):
        detect_all(from_evals(directory, "demo_lastword", "perplexity"))
