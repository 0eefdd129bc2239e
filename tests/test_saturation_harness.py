"""Reading lm-eval result files: both layouts, model/step discovery, directions, and bad files."""

import json
import shutil
from pathlib import Path

import pytest

from lmdynamics.saturation import harness as H

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
