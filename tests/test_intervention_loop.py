"""The intervention loop a user runs, through the real commands: a sweep of head interventions -> compare with a
baseline -> a verdict; ``make saturation`` on each head kind; the demo beside another size on the default corpus."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from lmdynamics import compare
from lmdynamics.commands.compare import main as compare_main
from tests.helpers.cli import ROOT, cli_env

TINY = {"trainer.max_steps": 30, "trainer.val_check_interval": 10, "trainer.enable_progress_bar": False,
        "model.model.num_heads": 2, "data.batch_size": 8, "data.val_blocks": 16, "checkpoints.every": 10}


def _env():
    """The checkout's sources first (``cli_env``; the sweep's workers inherit it), one thread per process."""
    return cli_env({"OMP_NUM_THREADS": "1"})


def _sweep(tmp_path, spec: dict, *args) -> subprocess.CompletedProcess:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return subprocess.run([sys.executable, str(ROOT / "train" / "sweep.py"), "--config", str(path), *args],
                          capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=900)


def _make_saturation(run_dir) -> pd.DataFrame:
    """``make saturation RUN_DIR=...`` as a user runs it; its saturation.csv, whose head signals each gave a verdict."""
    res = subprocess.run(["make", "-s", "-o", ".venv/.installed", f"PY={sys.executable}", "saturation", f"RUN_DIR={run_dir}"],
                         capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    table = pd.read_csv(run_dir / "saturation" / "saturation.csv")
    assert table["kl_uniform_moved"].notna().all() and table["er_moved"].notna().all()
    return table


def _capture_legends(monkeypatch) -> dict:
    """Every figure compare saves: its legend's labels and, per label, the (colour, line style) of its line."""
    seen = {}
    save = compare._save_figure

    def recording(fig, path):
        labels, styles = [], {}
        for legend in fig.legends:
            for handle, text in zip(legend.legend_handles, legend.get_texts()):
                labels.append(text.get_text())
                if hasattr(handle, "get_linestyle") and hasattr(handle, "get_color"):
                    styles[text.get_text()] = (str(handle.get_color()), str(handle.get_linestyle()))
        seen[path.name] = (labels, styles)
        return save(fig, path)

    monkeypatch.setattr(compare, "_save_figure", recording)
    return seen


@pytest.mark.slow
def test_sweep_compare_verdict_and_saturation_of_each_head(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    spec = {"name": "iv", "root": str(root),
            "configs": [str(ROOT / "configs/train/demo.yaml"), str(ROOT / "configs/train/interventions/synthetic.yaml")],
            "set": {**TINY, "trainer.max_steps": 400}, "workers": 2,
            "grid": [{"model.model.hidden_size": [8],
                      "head": {"plain": {}, "lowrank": {"model.model.head.kind": "low_rank", "model.model.head.rank": 4},
                               "mos": {"model.model.head.kind": "mos", "model.model.head.components": 4}},
                      "seed_everything": [1, 2]},
                     {"model.model.hidden_size": [16], "seed_everything": [1, 2]}]}
    res = _sweep(tmp_path, spec, "--set", "trainer.max_steps=30")  # the command line shortens every run
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    runs = sorted(p.name for p in root.iterdir() if (p / "run.json").is_file())
    assert len(runs) == 8
    for name in runs:  # the override reached every run's resolved config, and each run's log is in its directory
        assert yaml.safe_load((root / name / "config.yaml").read_text())["trainer"]["max_steps"] == 30
        assert (root / name / "sweep.log").read_text().startswith("$ ")
    summary = pd.read_csv(root / "sweep_summary.csv")
    assert sorted(summary["run"]) == runs and (summary["status"] == "done").all() and (summary["steps"] == 30).all()
    assert summary["final_val_loss"].notna().all() and summary["final_excess_loss"].notna().all()
    assert (summary["overrides"] == "trainer.max_steps=30").all()
    assert all(name in res.stdout for name in runs) and "final_val_loss" in res.stdout  # the table is printed

    legends = _capture_legends(monkeypatch)
    out = tmp_path / "cmp"
    assert compare_main([str(root), "--out", str(out), "--group-by", "hidden_size,head.kind", "--baseline", "head.kind=plain"]) == 0
    groups = {"d=8 · head=plain", "d=8 · head=low_rank r=4", "d=8 · head=mos K=4", "d=16 · head=plain"}
    per_run = pd.read_csv(out / "runs.csv")
    assert set(per_run["group"]) == groups and per_run.groupby("group").size().eq(2).all()
    for figure in ("val_loss.png", "excess_loss.png", "head_er.png", "head_kl_uniform.png", "final_vs_best.png"):
        labels, styles = legends[figure]
        assert groups <= set(labels), (figure, labels)
        if figure != "final_vs_best.png":  # lines: a distinct colour and line style per group, the same in each figure
            assert len({styles[g] for g in groups}) == 4 and styles == legends["val_loss.png"][1], figure
    verdict = pd.read_csv(out / "verdict.csv")
    for group in ("d=8 · head=low_rank r=4", "d=8 · head=mos K=4"):
        rows = verdict[verdict["group"] == group]
        assert set(rows["metric"]) == {"final validation loss", "best validation loss", "final excess loss"}
        assert (rows["baseline"] == "d=8 · head=plain").all() and (rows["pairing"] == "by seed").all()
        assert (rows["n"] == "2 pairs").all() and rows["ci_low"].notna().all()
        assert set(rows["verdict"]) <= {"better", "worse", "no significant difference"}
    assert not set(verdict["group"]) & {"d=8 · head=plain", "d=16 · head=plain"}  # the baselines themselves
    report = (out / "report.md").read_text()
    assert report.index("## Verdict") < report.index("## Per group")  # the verdict leads
    assert "No run has CKA-to-final measurements" in report  # the synthetic runs measure no convergence

    mos = root / "iv-hidden_size8-mos-seed_everything1"
    table = _make_saturation(mos)  # the mean of the components gives the head signals' verdicts
    text = (mos / "saturation" / "report.md").read_text()
    assert "no kl_uniform rows" not in text and "## Mixture components" in text
    for signal in ("kl_uniform", "er"):
        for k in range(4):
            assert table[f"{signal}[head_c{k:02d}]_moved"].notna().all()
    _make_saturation(root / "iv-hidden_size8-lowrank-seed_everything1")


@pytest.mark.slow
def test_tied_head_gives_head_signals_to_make_saturation(tmp_path):
    root = tmp_path / "runs"
    spec = {"name": "tied", "root": str(root),
            "configs": [str(ROOT / "configs/train/demo.yaml"), str(ROOT / "configs/train/interventions/synthetic.yaml"),
                        str(ROOT / "configs/train/interventions/tied.yaml")],
            "set": {**TINY, "model.model.hidden_size": 8}}
    res = _sweep(tmp_path, spec)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run = root / "tied"
    assert json.loads((run / "run.json").read_text())["architecture"]["tie_embeddings"] is True
    _make_saturation(run)


@pytest.mark.slow
def test_demo_beside_another_size_on_the_default_corpus_gives_a_full_report(tmp_path):
    """The demo config and a shallower, narrower model (different layer counts: CKA panels a group lacks) on the
    default corpus, with every measurement on, a few steps each; compared by hidden size."""
    root = tmp_path / "runs"
    spec = {"name": "demo", "root": str(root), "configs": [str(ROOT / "configs/train/demo.yaml")],
            "set": {"trainer.max_steps": 8, "trainer.val_check_interval": 4, "trainer.enable_progress_bar": False,
                    "checkpoints.every": 4, "data.max_documents": 300, "data.tokenizer": "bpe:512",
                    "data.context_length": 32, "model.model.context_length": 32, "data.batch_size": 4,
                    "data.val_blocks": 8, "probe.num_sequences": 16, "data.cache_dir": str(tmp_path.parent / "lmd-cache")},
            "workers": 2, "grid": {"size": {"d128": {}, "d32": {"model.model.hidden_size": 32, "model.model.num_layers": 2}}}}
    res = _sweep(tmp_path, spec)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = tmp_path / "cmp"
    res = subprocess.run([sys.executable, str(ROOT / "analysis" / "compare.py"), str(root), "--out", str(out),
                          "--group-by", "model.model.hidden_size"], capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    report = (out / "report.md").read_text()
    empty = [part.splitlines()[0] for part in report.split("## Figures")[1].split("### ")[1:] if "No run has these values" in part]
    assert empty == ["excess loss (val_loss - entropy floor)"], empty  # only the synthetic language has an excess loss
    for figure in ("val_loss", "head_er", "head_kl_uniform", "final_vs_best", "convergence_fraction", "cka_final_curves"):
        assert (out / "figures" / f"{figure}.png").stat().st_size > 1000, figure
    assert "## Convergence fraction per group and layer" in report and "| d=32 |" in report and "| d=128 |" in report
    assert "## Group means" in report  # no baseline: the group means with intervals lead
