"""analysis/saturation.py end to end: a real tiny training run's table, harness files, and bad input."""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch
import pytest

from lmdynamics import store
from tests.helpers.cli import ROOT, cli_env, run_cli, tiny_config

SCRIPT = ROOT / "analysis" / "saturation.py"
DATA = Path(__file__).parent / "data" / "lm_eval"


def _script(verb: str = "saturation") -> SimpleNamespace:
    """The verb as its script runs it (``lmdynamics.cli.main([VERB, ...])``), in this process."""
    from lmdynamics.cli import main

    return SimpleNamespace(main=lambda argv: main([verb, *argv]))


def run_main(*args) -> SimpleNamespace:
    """The script's main() in this process (what `lmdynamics saturation` will call), with its stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = _script().main([str(a) for a in args])
    return SimpleNamespace(returncode=code, stderr=err.getvalue())


def saturation(*args):
    """The script as a user runs it, in a subprocess."""
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          env=cli_env(), cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("satrun")
    res = run_cli("fit", "--config", str(tiny_config(tmp, **{"trainer.val_check_interval": 2})))
    assert res.returncode == 0, res.stderr[-2000:]
    return tmp / "runs" / "tiny"


@pytest.mark.slow
def test_table_of_a_training_run_gives_csv_report_and_side_by_side_figure(tiny_run, tmp_path):
    out = tmp_path / "sat"
    res = saturation("--table", tiny_run, "--metric", "val_loss", "--out", out)
    assert res.returncode == 0, res.stderr
    table = store.read_table(store.table_path(tiny_run))
    val = table[(table.metric == "val_loss") & (table.layer == -1)].sort_values("step")
    assert len(val) >= 3
    csv = pd.read_csv(out / "saturation.csv")
    assert len(csv) == 1
    row = csv.iloc[0]
    eligible = val[val.step >= 0.1 * val.step.max()]
    assert row.best_value == pytest.approx(eligible.value.min()) and row.best_step == eligible.step[eligible.value.idxmin()]
    assert row.final_step == val.step.max() and row.final_value == pytest.approx(val.value.iloc[-1])
    assert row.gap == pytest.approx(row.final_value / row.best_value - 1) and not row.higher_is_better
    # the head signals were read from the run's own head_rank rows
    for signal in ("kl_uniform", "er", "anisotropy"):
        assert not pd.isna(row[f"{signal}_moved"]), signal
    model = row.model
    assert (out / "figures" / f"side_by_side_{model}.png").stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert f"**{model}**" in report and "side_by_side" in report
    assert not list(out.parent.glob(".*tmp*"))


def _eval_dir(tmp_path: Path, ppl_by_step: dict[int, float], layout: str = "0.3") -> Path:
    root = tmp_path / "evals"
    for step, ppl in ppl_by_step.items():
        if layout == "0.3":
            data = json.loads((DATA / "160m_step143000.json").read_text())
            data["results"]["lambada_openai"]["ppl"] = ppl
            path = root / "pythia-160m" / "zero-shot" / f"160m_step{step}.json"
        else:
            data = json.loads((DATA / "lm-eval-0.4_demo_step600.json").read_text())
            data["results"]["demo_lastword"]["perplexity,none"] = ppl
            data["config"]["model_args"] = {"pretrained": f"runs/demo/checkpoints/step{step:08d}"}
            path = root / "demo" / "results_2024-01-01.json".replace("01-01", f"{step:05d}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("layout, task, metric", [("0.3", "lambada_openai", "ppl"), ("0.4", "demo_lastword", "perplexity")])
def test_harness_files_in_either_layout(tmp_path, layout, task, metric):
    ppl = {1000: 300.0, 13000: 30.0, 33000: 24.6, 73000: 24.9, 113000: 28.0, 143000: 32.9}
    evals = _eval_dir(tmp_path, ppl, layout)
    res = saturation("--evals", evals, "--task", task, "--metric", metric, "--out", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    row = pd.read_csv(tmp_path / "out" / "saturation.csv").iloc[0]
    assert (row.task, row.metric, row.best_step, row.final_step) == (task, metric, 33000, 143000)
    assert row.gap == pytest.approx(32.9 / 24.6 - 1) and row.saturated
    assert row.onset_step == 73000  # last checkpoint within 2.5% of the best (median of 3)
    assert not row.higher_is_better
    table = store.read_table(store.table_path(tmp_path / "out"))  # every ingested metric, as tidy rows
    assert set(table.step) == set(ppl) and f"{task}/{metric}_stderr" in set(table.metric)
    assert table[table.metric == f"{task}/{metric}"].set_index("step").value.to_dict() == ppl


def _bad_cases(tmp_path: Path):
    good = {1000: 30.0, 2000: 25.0, 3000: 26.0}
    yield "unknown task", ["--task", "lambada", "--metric", "ppl"], good, None, "available: arc_easy, lambada_openai, sciq"
    yield "unknown metric", ["--task", "lambada_openai", "--metric", "pp"], good, None, "available: acc, acc_stderr, ppl, ppl_stderr"
    yield "two checkpoints", ["--task", "lambada_openai", "--metric", "ppl"], {1000: 3.0, 2000: 4.0}, None, "at least 3"
    yield "empty file", ["--task", "lambada_openai", "--metric", "ppl"], good, ("160m_step4000.json", ""), "empty file"
    yield "malformed", ["--task", "lambada_openai", "--metric", "ppl"], good, ("160m_step4000.json", "{"), "not valid JSON"
    yield "no step", ["--task", "lambada_openai", "--metric", "ppl"], good, ("final.json", '{"results": {"t": {"acc": 1}}}'), "cannot tell the checkpoint step"


@pytest.mark.parametrize("case", range(6))
def test_bad_input_is_one_line_nonzero_and_writes_nothing(tmp_path, case):
    name, args, ppl, extra, words = list(_bad_cases(tmp_path))[case]
    evals = _eval_dir(tmp_path, ppl)
    if extra:
        (evals / "pythia-160m" / "zero-shot" / extra[0]).write_text(extra[1])
    out = tmp_path / "out"
    res = run_main("--evals", evals, *args, "--out", out)
    assert res.returncode == 2, name
    assert res.stderr.count("\n") == 1 and words in res.stderr, res.stderr
    if extra:
        assert extra[0] in res.stderr
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))


def test_no_result_files_and_table_without_the_metric(tmp_path):
    (tmp_path / "empty").mkdir()
    res = run_main("--evals", tmp_path / "empty", "--task", "t", "--metric", "ppl", "--out", tmp_path / "out")
    assert res.returncode == 2 and "no lm-eval result files" in res.stderr and res.stderr.count("\n") == 1
    store.append(store.table_path(tmp_path / "run"), [dict(run="r", model="m", step=s, tokens=s, layer=-1,
                                                          component="model", metric="train_loss", value=1.0)
                                                     for s in range(4)])
    res = run_main("--table", tmp_path / "run", "--metric", "val_loss", "--out", tmp_path / "out")
    assert res.returncode == 2 and "available: train_loss" in res.stderr and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_scaling_gap_through_the_command(tmp_path):
    from lmdynamics.saturation.scaling import Law, pythia_parameters

    law = Law(A=119.09, alpha=0.246)
    root = tmp_path / "evals"
    for model, factor in (("pythia-1.4b", 1.0), ("pythia-2.8b", 1.0), ("pythia-160m", 1.1)):
        for step in (13000, 33000, 73000, 143000):
            ppl = float(np.exp(law(pythia_parameters(model), step * 2_097_152))) ** (factor if step == 143000 else 1.0)
            path = root / model / f"step{step}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"results": {"pile": {"ppl": ppl}}}))
    res = saturation("--evals", root, "--task", "pile", "--metric", "ppl", "--out", tmp_path / "out",
                     "--tokens-per-step", 2_097_152, "--scaling-large", "pythia-1.4b,pythia-2.8b")
    assert res.returncode == 0, res.stderr
    table = pd.read_csv(tmp_path / "out" / "scaling.csv").set_index("model")
    assert table.loc["pythia-160m", "final_gap"] == pytest.approx(0.1, rel=1e-6)  # loss = ln ppl, 10% above the law
    assert abs(table.loc["pythia-160m", "best_gap"]) < 1e-9
    assert (tmp_path / "out" / "figures" / "scaling_law.png").is_file()
    assert "A = 119.09, alpha = 0.246 fitted on pythia-1.4b, pythia-2.8b" in (tmp_path / "out" / "report.md").read_text()
    res = saturation("--evals", root, "--task", "pile", "--metric", "ppl", "--out", tmp_path / "out2",
                     "--scaling-large", "pythia-1.4b,pythia-2.8b")
    assert res.returncode == 2 and "--tokens_per_step" in res.stderr and not (tmp_path / "out2").exists()


@pytest.mark.slow
def test_lowrank_head_command_on_a_checkpoint_of_the_run(tiny_run, tmp_path):
    module = _script("lowrank-head")
    ckpt = sorted((tiny_run / "checkpoints").iterdir())[-1]
    out = tmp_path / "lr"
    code = module.main(["--checkpoint", str(ckpt), "--out", str(out), "--train-blocks", "64", "--eval-blocks", "8",
                        "--steps", "30", "--r-min", "8",
                        "--cache-dir", str(tiny_run.parents[2] / "lmd-cache")])
    assert code == 0
    table = pd.read_csv(out / "lowrank_head.csv")
    ranks = table[table.reference.isna()]
    assert ranks.r.tolist() == [8, 16, 32] and (out / "figures" / "lowrank_head.png").is_file()
    full = table[table.reference == "full"].loss.iloc[0]
    assert ranks.loss.iloc[-1] <= full + 0.05  # r = d starts at the full head and keeps its loss
    assert module.main(["--checkpoint", str(tmp_path), "--out", str(tmp_path / "bad")]) == 2


TASK_YAML = """task: tiny_lastword
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{context}}}}"
doc_to_target: " {{{{target}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.mark.slow
def test_lm_eval_on_the_run_checkpoints_offline_resumable_then_saturation(tiny_run, tmp_path, capsys):
    """The real lm-eval package (HFLM) on our checkpoints, with a local last-word task over a JSONL file."""
    import random

    module = _script("evaluate")
    rng = random.Random(0)
    words = "the of and to in is a that for it as was with be by on not".split()
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    docs = [[rng.choice(words) for _ in range(10)] for _ in range(12)]
    (tasks / "lastword.jsonl").write_text("".join(json.dumps({"context": " ".join(d[:-1]), "target": d[-1]}) + "\n"
                                                  for d in docs))
    (tasks / "lastword.yaml").write_text(TASK_YAML.format(data=tasks / "lastword.jsonl"))
    out = tmp_path / "evals"
    args = ["--run", str(tiny_run), "--steps", "2,3,6", "--tasks", "tiny_lastword", "--include-path", str(tasks),
            "--batch-size", "4", "--out", str(out)]
    assert module.main(args) == 0
    files = sorted(out.rglob("step*.json"))
    assert [f.name for f in files] == ["step00000002.json", "step00000003.json", "step00000006.json"]
    first = json.loads(files[-1].read_text())
    assert first["higher_is_better"]["tiny_lastword"] == {"perplexity": False, "acc": True}
    assert first["config"]["model_args"]["pretrained"].endswith("step00000006")
    rows = store.read_table(store.table_path(out))
    assert set(rows.metric) == {"tiny_lastword/perplexity", "tiny_lastword/perplexity_stderr", "tiny_lastword/acc",
                                "tiny_lastword/acc_stderr"}
    ppl6 = rows[(rows.metric == "tiny_lastword/perplexity") & (rows.step == 6)].value.iloc[0]
    assert ppl6 == first["results"]["tiny_lastword"]["perplexity,none"] and ppl6 > 1
    info = json.loads((tiny_run / "run.json").read_text())
    assert (rows.tokens == rows.step * info["tokens_per_step"]).all()
    mtimes = [f.stat().st_mtime_ns for f in files]
    capsys.readouterr()
    assert module.main(args) == 0  # resumed: nothing evaluated again
    assert [f.stat().st_mtime_ns for f in files] == mtimes and capsys.readouterr().out.count("skipped") == 3
    res = saturation("--evals", out, "--task", "tiny_lastword", "--metric", "perplexity", "--measures", tiny_run,
                     "--out", tmp_path / "sat")
    assert res.returncode == 0, res.stderr
    row = pd.read_csv(tmp_path / "sat" / "saturation.csv").iloc[0]
    assert row.model == info["model"] and row.final_step == 6 and not row.higher_is_better
    assert not pd.isna(row.kl_uniform_moved)  # the run's head rows joined by model name


@pytest.mark.slow
def test_corpus_loss_at_every_checkpoint_without_the_harness(tiny_run, tmp_path):
    from transformers import GPTNeoXForCausalLM

    from lmdynamics.saturation import evaluate

    run, model, tps, targets = evaluate.run_targets(tiny_run, [0, 6])
    blocks = torch.randint(0, 512, (3, 32), generator=torch.Generator().manual_seed(0))
    rows = evaluate.evaluate_corpus_loss(targets, model, tmp_path, blocks, tps, run, log=lambda s: None)
    for row, target in zip(rows, targets):
        lm = GPTNeoXForCausalLM.from_pretrained(target.model_args["pretrained"]).eval()
        with torch.no_grad():
            ref = lm(input_ids=blocks, labels=blocks).loss  # equal-length blocks: the mean over all tokens
        assert row["value"] == pytest.approx(float(ref), rel=1e-5) and row["tokens"] == target.step * tps
    assert rows[0]["value"] != rows[1]["value"]
    assert evaluate.evaluate_corpus_loss(targets, model, tmp_path, blocks, tps, run, log=lambda s: None) == []


def test_config_file_fills_the_options_and_the_command_line_wins(tmp_path):
    evals = _eval_dir(tmp_path, {1000: 300.0, 33000: 24.6, 73000: 24.9, 143000: 32.9})
    cfg = tmp_path / "sat.yaml"
    cfg.write_text(f"evals: {evals}\ntask: lambada_openai\nmetric: acc\nout: {tmp_path / 'from_config'}\n"
                   "tokens_per_step: 2097152\n")
    res = run_main("--config", cfg, "--metric", "ppl")
    assert res.returncode == 0, res.stderr
    row = pd.read_csv(tmp_path / "from_config" / "saturation.csv").iloc[0]
    assert row.metric == "ppl" and row.saturated
    shipped = ROOT / "configs" / "analysis" / "saturation-pythia.yaml"
    res = run_main("--config", shipped, "--evals", evals, "--out", tmp_path / "pythia")
    assert res.returncode == 2 and "pythia-1.4b" in res.stderr  # its large models are not in this directory
    cfg.write_text("evals: x\nmetrik: ppl\n")
    res = run_main("--config", cfg)
    assert res.returncode == 2 and "unknown key(s) ['metrik']" in res.stderr
