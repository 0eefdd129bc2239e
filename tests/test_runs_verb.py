"""`lmdynamics runs ROOT`: each run's model, steps done / planned, status, final and best validation loss and
size on disk, checked against the run's own files read independently (run.json, the tidy table, the files)."""

import json
import os
import shutil

import pandas as pd
import pytest

from lmdynamics import store
from lmdynamics.cli import main as lmdynamics
from tests.helpers.cli import train_tiny


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("runs-verb"))


@pytest.mark.slow
def test_runs_lists_every_run_with_its_status_losses_and_size(finished_run, tmp_path, capsys):
    root = tmp_path / "runs"
    shutil.copytree(finished_run, root / "done")
    interrupted = root / "stopped"  # stopped before its last step: no finished mark, no resume checkpoint at the end
    shutil.copytree(finished_run, interrupted)
    (interrupted / "lightning" / "finished.json").unlink()
    (interrupted / "lightning" / "last.ckpt").unlink()
    store.rewind(store.table_path(interrupted), "tiny", 3)
    running = root / "going"
    shutil.copytree(interrupted, running)
    (running / "lightning" / "running.json").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    (root / "not-a-run").mkdir()

    assert lmdynamics(["runs", str(root), "--json"]) == 0
    rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert sorted(rows) == ["done", "going", "stopped"]
    assert {k: rows[k]["status"] for k in rows} == {"done": "finished", "going": "running", "stopped": "interrupted"}
    for name, row in rows.items():
        run = root / name
        info = json.loads((run / "run.json").read_text())
        table = pd.read_parquet(store.table_path(run))
        val = table[table.metric == "val_loss"].drop_duplicates(["step"], keep="last").sort_values("step")
        assert row["model"] == info["model"] and row["steps_planned"] == info["max_steps"] == 6
        assert row["steps_done"] == table[table.metric == "train_loss"].step.max()
        assert row["final_val_loss"] == val.value.iloc[-1] and row["best_val_loss"] == val.value.min()
        assert row["bytes_on_disk"] == sum(p.stat().st_size for p in run.rglob("*") if p.is_file())
    assert rows["done"]["steps_done"] == 6 and rows["stopped"]["steps_done"] == 3

    assert lmdynamics(["runs", str(root)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:4] == ["run", "model", "steps", "status"] and len(lines) == 4
    assert any(line.split()[:4] == ["done", rows["done"]["model"], "6/6", "finished"] for line in lines)


def test_runs_of_a_missing_root_is_one_line(tmp_path, capsys):
    assert lmdynamics(["runs", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "nowhere" in err[0]


@pytest.mark.slow
def test_listing_finished_and_running_runs_imports_no_torch(tmp_path):
    """`lmdynamics runs` answers from run.json, the table and the status markers: for finished and running runs
    it imports neither torch nor lightning (a cold interpreter, as a user starts it). Only a run from before
    the finished marker, or an interrupted one, needs its resume checkpoint opened."""
    import subprocess
    import sys

    from tests.helpers.cli import cli_env

    for name, marker, content in (("done", "finished.json", {"step": 6}),
                                  ("going", "running.json", {"pid": os.getpid(), "host": os.uname().nodename})):
        run = tmp_path / "runs" / name
        (run / "lightning").mkdir(parents=True)
        (run / "run.json").write_text(json.dumps({"run": name, "model": "m", "max_steps": 6}))
        (run / "lightning" / marker).write_text(json.dumps(content))
        store.append(store.table_path(run), [{"run": name, "model": "m", "step": s, "tokens": s, "layer": -1,
                                              "component": "model", "metric": "val_loss", "value": 5.0 - s} for s in (3, 6)])
    code = ("import json, sys; from lmdynamics.cli import main; main(['runs', sys.argv[1], '--json']); "
            "print(json.dumps(sorted(m for m in ('torch', 'lightning') if m in sys.modules)))")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "runs")], capture_output=True, text=True,
                         env=cli_env(), timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    *rows, imported = res.stdout.strip().splitlines()
    assert {json.loads(r)["name"]: json.loads(r)["status"] for r in rows} == {"done": "finished", "going": "running"}
    assert json.loads(imported) == [], imported


def test_final_and_best_validation_loss_are_compares_reading(tmp_path):
    """`lmdynamics runs` and `compare` read final and best validation loss the same way (compare.runs.final_and_best):
    by step whatever the row order, the model-level curve only (a head-component row of the same metric ignored)."""
    import math

    from lmdynamics import runs, store
    from lmdynamics.compare.runs import Run, summarize

    run = tmp_path / "r"
    rows = [{"run": "r", "model": "m", "step": s, "tokens": s, "layer": -1, "component": c, "metric": "val_loss",
             "value": v} for s, v, c in ((30, 2.0, "model"), (10, 3.0, "model"), (20, 1.5, "model"), (40, 0.1, "head"))]
    store.append(store.table_path(run), rows)
    (run / "run.json").write_text(json.dumps({"run": "r", "model": "m", "max_steps": 30}))
    line = runs.summarize(run)
    assert (line.final_val_loss, line.best_val_loss, line.best_val_step) == (2.0, 1.5, 20)
    ours = summarize(Run("r", run, {}, {}, store.read_table(store.table_path(run))))
    assert (ours["final_val_loss"], ours["best_val_loss"], ours["best_step"]) == (2.0, 1.5, 20)
    assert not math.isnan(line.final_val_loss)
