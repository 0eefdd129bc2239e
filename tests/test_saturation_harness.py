"""Reading lm-eval result files: both layouts, model/step discovery, directions, and bad files."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmdynamics.saturation import harness as H
from tests.helpers.encoding import ascii_locale

DATA = Path(__file__).parent / "data" / "lm_eval"


def _pythia_layout(tmp_path: Path) -> Path:
    root = tmp_path / "pythia-v1"
    for name in ("160m_step1000.json", "160m_step143000.json"):
        (root / "pythia-160m" / "zero-shot").mkdir(parents=True, exist_ok=True)
        shutil.copy(DATA / name, root / "pythia-160m" / "zero-shot" / name)
    return root


def test_layout_03_rows_from_the_pythia_folder_structure(tmp_path):
    root = _pythia_layout(tmp_path)
    rows, directions = H.read_evals(root, tokens_per_step=2_097_152)
    assert set(rows.model) == {"pythia-160m"} and sorted(set(rows.step)) == [1000, 143000]
    assert set(rows.layer) == {-1} and set(rows.component) == {"eval"}
    for name, step in (("160m_step1000.json", 1000), ("160m_step143000.json", 143000)):
        source = json.loads((DATA / name).read_text())["results"]
        expected = {f"{t}/{m}": v for t, ms in source.items() for m, v in ms.items()}
        got = rows[rows.step == step].set_index("metric").value.to_dict()
        assert got == expected  # every metric, its _stderr twin included, nothing else
        assert (rows[rows.step == step].tokens == step * 2_097_152).all()
    assert "lambada_openai/ppl_stderr" in set(rows.metric)
    assert directions == {}  # the 0.3 layout records no directions
    assert not H.higher_is_better("lambada_openai/ppl") and H.higher_is_better("lambada_openai/acc")


def test_layout_04_metric_filter_keys_and_directions(tmp_path):
    shutil.copy(DATA / "lm-eval-0.4_demo_step600.json", tmp_path / "demo_step600.json")
    files = H.read_directory(tmp_path)
    assert len(files) == 1 and files[0].step == 600 and files[0].model == tmp_path.name
    source = json.loads((DATA / "lm-eval-0.4_demo_step600.json").read_text())["results"]["demo_lastword"]
    assert files[0].values == {
        ("demo_lastword", "perplexity"): source["perplexity,none"],
        ("demo_lastword", "perplexity_stderr"): source["perplexity_stderr,none"],
        ("demo_lastword", "acc"): source["acc,none"],
        ("demo_lastword", "acc_stderr"): source["acc_stderr,none"],
    }  # alias, name and sample_len are not metrics
    directions = H.directions(files)
    assert directions == {"demo_lastword/perplexity": False, "demo_lastword/acc": True}
    # the file's own map wins over the guess from the name
    assert H.higher_is_better("demo_lastword/perplexity", {"demo_lastword/perplexity": True})


def _write(path: Path, results: dict, model_args=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"results": results}
    if model_args is not None:
        data["config"] = {"model_args": model_args}
    path.write_text(json.dumps(data))
    return path


def test_step_from_model_args_revision_or_checkpoint_path_and_filters(tmp_path):
    _write(tmp_path / "m1" / "results.json", {"t": {"acc": 0.5}}, "pretrained=EleutherAI/pythia-70m,revision=step3000")
    _write(tmp_path / "m2" / "x" / "results_2024.json", {"t": {"acc,strict-match": 0.25, "acc,none": 0.5}},
           {"pretrained": "runs/demo/checkpoints/step00000600", "dtype": "float32"})
    files = {f.model: f for f in H.read_directory(tmp_path)}
    assert files["m1"].step == 3000 and files["m2"].step == 600
    assert files["m2"].values == {("t", "acc,strict-match"): 0.25, ("t", "acc"): 0.5}


def test_two_files_of_one_checkpoint_merge_but_must_agree(tmp_path):
    _write(tmp_path / "m" / "a_step5.json", {"t": {"acc": 0.5}})
    _write(tmp_path / "m" / "b_step5.json", {"u": {"acc": 0.7}})
    (f,) = H.read_directory(tmp_path)
    assert f.values == {("t", "acc"): 0.5, ("u", "acc"): 0.7}
    _write(tmp_path / "m" / "c_step5.json", {"t": {"acc": 0.6}})
    with pytest.raises(H.HarnessError, match="c_step5.json.*different values"):
        H.read_directory(tmp_path)


@pytest.mark.parametrize("content, words", [
    ("", "empty file"),
    ('{"results": {"t": {"acc": 0.5}', "not valid JSON"),
    ('{"version": 1}', "not an lm-eval result file"),
])
def test_bad_file_is_named_and_nothing_is_skipped(tmp_path, content, words):
    _write(tmp_path / "m" / "good_step1.json", {"t": {"acc": 0.5}})
    bad = tmp_path / "m" / "bad_step2.json"
    bad.write_text(content)
    with pytest.raises(H.HarnessError) as err:
        H.read_directory(tmp_path)
    assert str(bad) in str(err.value) and words in str(err.value) and "\n" not in str(err.value)


def test_no_files_and_unparseable_step(tmp_path):
    with pytest.raises(H.HarnessError, match="no lm-eval result files"):
        H.read_directory(tmp_path)
    _write(tmp_path / "m" / "final.json", {"t": {"acc": 0.5}}, "pretrained=gpt2")
    with pytest.raises(H.HarnessError, match="final.json: cannot tell the checkpoint step"):
        H.read_directory(tmp_path)


@pytest.mark.parametrize("metric, up", [
    ("acc", True), ("acc_norm,none", True), ("exact_match,strict-match", True), ("f1", True),
    ("ppl", False), ("word_perplexity,none", False), ("bits_per_byte", False), ("ter", False),
    ("likelihood_difference", False),
    ("word_ppl", False), ("token_perplexity", False), ("eval_loss", False),  # lower-is-better by their suffix
    ("acc_stderr", False), ("acc_stderr,none", False), ("exact_match_stderr,strict-match", False),
])
@pytest.mark.parametrize("task", ["", "lambada_openai/", "mmlu/stem/", "bbh/cot/logical_deduction/"])
def test_direction_of_every_kind_of_metric_name(task, metric, up):
    # a standard error has no direction of its own: it is reported lower-is-better (never a saturation series);
    # the direction comes from the metric part only, after the last "/" of a group/subtask task and before ","
    assert H.higher_is_better(task + metric) is up


@pytest.mark.parametrize("metric, up", [
    ("bits_per_byte,strict-match", False), ("word_perplexity,flex,extract", False), ("ppl,a,b", False),
    ("acc,get-answer,take_first", True), ("bits_per_byte,none,x", False), ("acc_stderr,x,y", False),
])
def test_direction_ignores_a_filter_that_itself_holds_commas(metric, up):
    assert H.higher_is_better("group/sub/" + metric) is up


def test_filters_of_the_04_layout_with_and_without_commas(tmp_path):
    values, _ = H.parse_results({"results": {"t": {
        "acc,none": 0.5, "acc_norm,": 0.4, "exact_match,strict-match": 0.3, "exact_match,flex,take_first": 0.2,
        "f1,x,none": 0.1, "sample_len": 7, "alias": "t"}}}, "where")
    assert values == {("t", "acc"): 0.5, ("t", "acc_norm"): 0.4, ("t", "exact_match,strict-match"): 0.3,
                      ("t", "exact_match,flex,take_first"): 0.2, ("t", "f1,x,none"): 0.1}


@pytest.mark.parametrize("data", [[{"results": {"t": {"acc": 0.5}}}], "results", {"results": {}},
                                  {"results": [["t", {"acc": 0.5}]]}, {"results": "t"}])
def test_not_a_result_file_is_refused_with_the_message(data):
    with pytest.raises(H.HarnessError, match="^where: not an lm-eval result file"):
        H.parse_results(data, "where")


def _no_step_message(tmp_path, config) -> str:
    path = tmp_path / "m" / "final.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"results": {"t": {"acc": 0.5}}, "config": config}))
    with pytest.raises(H.HarnessError, match="cannot tell the checkpoint step") as err:
        H.read_file(path, "m")
    return str(err.value)


@pytest.mark.parametrize("config", [{}, {"model_args": ""}, {"model_args": None}, {"batch_size": 8},
                                    "pretrained=x,revision=step5", ["revision=step5"], 3])
def test_missing_model_args_or_a_config_that_is_not_a_mapping(tmp_path, config):
    # nothing to read the step from: the message says the model_args are none (a non-mapping config is ignored)
    assert "model_args (none)" in _no_step_message(tmp_path, config)


def test_model_args_mapping_is_joined_and_read(tmp_path):
    msg = _no_step_message(tmp_path, {"model_args": {"pretrained": "gpt2", "dtype": "float32"}})
    assert "model_args (pretrained=gpt2,dtype=float32)" in msg
    path = _write(tmp_path / "m" / "results.json", {"t": {"acc": 0.5}},
                  {"pretrained": "EleutherAI/pythia-70m", "revision": "step3000"})
    assert H.read_file(path, "m").step == 3000
    path = _write(tmp_path / "m" / "results.json", {"t": {"acc": 0.5}}, "pretrained=gpt2, revision = step_0042")
    assert H.read_file(path, "m").step == 42


def test_invalid_utf8_is_replaced_and_the_file_is_named(tmp_path):
    path = tmp_path / "m" / "x_step7.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"results": {"t": {"alias": "caf\xff\xfe", "acc": 0.5}}, "config": {"note": "\xc3("}}')
    f = H.read_file(path, "m")
    assert (f.path, f.model, f.step, f.values) == (path, "m", 7, {("t", "acc"): 0.5})


def test_utf8_whatever_the_locale(tmp_path):
    """Result files are UTF-8 JSON: read as UTF-8 where the locale's encoding is ASCII (LANG=C without Python's
    UTF-8 mode), in process: the C locale set for LC_CTYPE while the file is read."""
    path = tmp_path / "x_step7.json"
    path.write_bytes('{"results": {"caf\u00e9": {"acc": 0.5}}}'.encode("utf-8"))
    with ascii_locale():
        f = H.read_file(path, "m")
    assert sorted(t for t, _ in f.values) == ["caf\u00e9"]


@pytest.mark.parametrize("relative, refused", [(1e-9, True), (1e-10, True), (1e-11, True), (0.0, False),
                                               (1e-15, False)])
def test_two_files_must_agree_to_1e_12_relative(tmp_path, relative, refused):
    first = _write(tmp_path / "m" / "a_step5.json", {"t": {"acc": 0.5, "ppl": 12.5}})
    second = _write(tmp_path / "m" / "b_step5.json", {"t": {"ppl": 12.5 * (1 + relative)}})
    if refused:
        with pytest.raises(H.HarnessError) as err:
            H.read_directory(tmp_path)
        assert str(second) in str(err.value) and str(first) in str(err.value) and "t/ppl" in str(err.value)
    else:
        (f,) = H.read_directory(tmp_path)
        assert f.values[("t", "acc")] == 0.5 and f.values[("t", "ppl")] == pytest.approx(12.5, rel=1e-12)


def test_hidden_files_and_folders_named_json_are_skipped(tmp_path):
    _write(tmp_path / "m" / "a_step5.json", {"t": {"acc": 0.5}})
    (tmp_path / "m" / ".a_step6.json").write_text("not json")
    (tmp_path / "m" / "old.json").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("x")
    assert H.result_files(tmp_path) == [tmp_path / "m" / "a_step5.json"]
    assert [(f.model, f.step) for f in H.read_directory(tmp_path)] == [("m", 5)]


def test_rows_run_defaults_to_the_model_and_tokens_to_minus_one():
    files = [H.EvalFile(Path("a_step3.json"), "pythia-70m", 3, {("t", "acc"): 0.5}),
             H.EvalFile(Path("b_step3.json"), "pythia-160m", 3, {("t", "acc"): 0.6})]
    rows = H.to_rows(files)
    assert list(rows.run) == list(rows.model) == ["pythia-70m", "pythia-160m"]
    assert list(rows.tokens) == [-1, -1] and list(rows.step) == [3, 3]
    rows = H.to_rows(files, tokens_per_step=0, run="sweep")
    assert list(rows.run) == ["sweep", "sweep"] and list(rows.tokens) == [-1, -1]
    assert list(H.to_rows(files, tokens_per_step=10).tokens) == [30, 30]
