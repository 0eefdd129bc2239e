"""Sweeps: grid expansion, validation through the real CLI's dry run, parallel resumable execution."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lmdynamics import store
from lmdynamics.commands.sweep import main
from lmdynamics.sweep import SweepError, expand
from tests.helpers.cli import ROOT, cli_env, tiny_config


def _sweep_file(tmp_path, **spec):
    cfg = tiny_config(tmp_path, **{"data.source": "synthetic", "data.synthetic": {"vocab_size": 64, "rank": 8, "classes": 4},
                                   "trainer.max_steps": 3})
    body = {"name": "sw", "root": str(tmp_path / "sweep"), "configs": [str(cfg)],
            "set": {"convergence.enabled": False, "weight_rank.enabled": False}, **spec}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def test_grid_expands_to_named_runs_with_bundles_and_pooled_grids(tmp_path):
    cfg = tiny_config(tmp_path)
    sweep = expand({"name": "b", "configs": [str(cfg)], "set": {"trainer.max_steps": 5},
                    "grid": [{"model.model.hidden_size": [8, 16], "seed_everything": [1, 2, 3]},
                             {"model.model.hidden_size": [8],
                              "intervention": {"mos": {"model.model.head.kind": "mos"},
                                               "lr": {"model.model.head.kind": "low_rank", "model.model.head.rank": 2}}}]})
    names = [r.name for r in sweep.runs]
    assert len(names) == 2 * 3 + 2 and len(set(names)) == len(names)
    assert "b-hidden_size16-seed_everything3" in names and "b-hidden_size8-lr" in names
    lr = next(r for r in sweep.runs if r.name == "b-hidden_size8-lr")
    assert lr.settings == {"trainer.max_steps": 5, "model.model.hidden_size": 8, "model.model.head.kind": "low_rank",
                           "model.model.head.rank": 2}
    cmd = sweep.command(lr)
    assert cmd[cmd.index("--run.name") + 1] == "b-hidden_size8-lr" and cmd[cmd.index("--model.model.head.rank") + 1] == "2"
    with pytest.raises(SweepError, match="unknown key"):
        expand({"name": "x", "grids": []})
    with pytest.raises(SweepError, match="non-empty list"):
        expand({"grid": {"seed_everything": 3}})


@pytest.mark.parametrize("grid, words", [
    ({"model.model.hiden_size": [8, 16]}, "hiden_size"),
    ({"model.model.head.kind": ["plain", "softmax9"]}, "softmax9"),
    ({"model.model.head.kind": ["low_rank"], "model.model.head.rank": [64]}, "between 1 and the hidden size"),
])
def test_bad_grid_is_refused_in_one_line_before_anything_runs(tmp_path, capsys, grid, words):
    path = _sweep_file(tmp_path, grid=grid)
    assert main(["--config", str(path)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
    assert len(err) == 1 and words in err[0] and "sweep run sw-" in err[0], err
    assert not (tmp_path / "sweep").exists()


def test_print_commands_gives_one_runnable_command_per_run(tmp_path, capsys):
    path = _sweep_file(tmp_path, grid={"seed_everything": [1, 2], "model.model.hidden_size": [16, 32]})
    assert main(["--config", str(path), "--print_commands"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    names = set()
    for line in lines:
        cd, command = line.split(" && ", 1)
        assert cd == f"cd {shlex.quote(os.getcwd())}"  # relative paths of the sweep file hold from there
        argv = shlex.split(command)
        # the package's console command by its absolute path, never a script of the checkout
        assert Path(argv[0]).is_absolute() and Path(argv[0]).name == "lmdynamics" and argv[1] == "fit"
        names.add(argv[argv.index("--run.name") + 1])
    assert names == {f"sw-seed_everything{s}-hidden_size{d}" for s in (1, 2) for d in (16, 32)}
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_sweep_runs_in_parallel_skips_finished_and_resumes_interrupted(tmp_path, capsys):
    path = _sweep_file(tmp_path, grid={"intervention": {"plain": {}, "mos": {"model.model.head.kind": "mos",
                                                                             "model.model.head.components": 2}}})
    assert main(["--config", str(path), "--workers", "2"]) == 0  # each run is a `train/run.py fit` process
    root = tmp_path / "sweep"
    for name, model in (("sw-plain", "neox-L2-d32-h4"), ("sw-mos", "neox-L2-d32-h4+mos2")):
        assert json.loads((root / name / "run.json").read_text())["model"] == model
        assert (root / ".sweep" / f"{name}.done").is_file()
    capsys.readouterr()
    # a finished run is skipped; an interrupted one (directory, no marker) is resumed from its last checkpoint
    (root / ".sweep" / "sw-mos.done").unlink()
    assert main(["--config", str(path), "--workers", "2"]) == 0
    assert "1 already done, 1 to run" in capsys.readouterr().out
    assert len([ln for ln in (root / "sw-plain" / "sweep.log").read_text().splitlines() if ln.startswith("$ ")]) == 1
    log = (root / "sw-mos" / "sweep.log").read_text()
    commands = [ln for ln in log.splitlines() if ln.startswith("$ ")]
    assert len(commands) == 2 and "--ckpt_path" not in commands[0] and commands[1].endswith("--ckpt_path last")
    assert "already finished" in log and (root / ".sweep" / "sw-mos.done").is_file()


def test_set_overrides_every_run_after_the_file_and_the_grid(tmp_path, capsys):
    path = _sweep_file(tmp_path, grid={"model.model.hidden_size": [16, 32], "trainer.max_steps": [5]})
    assert main(["--config", str(path), "--set", "trainer.max_steps=2", "--set", "model.model.head.kind=mos",
                 "--print_commands"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        argv = shlex.split(line.split(" && ", 1)[1])
        # the last occurrence of a flag wins in the CLI: the override comes after the grid's value
        assert argv[len(argv) - 1 - argv[::-1].index("--trainer.max_steps") + 1] == "2"
        assert argv[len(argv) - 1 - argv[::-1].index("--model.model.head.kind") + 1] == "mos"


@pytest.mark.parametrize("item, words", [
    ("trainer.max_stepz=3", ["--set trainer.max_stepz", "keys under trainer:", "max_steps"]),
    ("model.model.head.kindd=mos", ["--set model.model.head.kindd", "keys under model.model.head: components, kind, rank"]),
    ("trainer.max_steps", ["--set 'trainer.max_steps'", "KEY=VALUE"]),
])
def test_bad_set_is_one_line_naming_the_keys_that_exist(tmp_path, capsys, item, words):
    path = _sweep_file(tmp_path, grid={"seed_everything": [1]})
    assert main(["--config", str(path), "--set", item]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and all(w in err[0] for w in words), err
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_a_failed_run_does_not_stop_the_others_and_is_summarised(tmp_path):
    """A learning rate of 1e30 passes the dry run and fails in training (a non-finite loss): the other run
    finishes, the summary lists the failure with its log's last line, and the sweep exits non-zero."""
    path = _sweep_file(tmp_path, grid={"lr": {"ok": {}, "broken": {"model.optim.lr": 1.0e+30, "trainer.gradient_clip_val": None}}})
    res = subprocess.run([sys.executable, str(ROOT / "train" / "sweep.py"), "--config", str(path), "--workers", "2"],
                         capture_output=True, text=True, env=cli_env(), cwd=ROOT, timeout=600)
    assert res.returncode == 1, res.stdout + res.stderr
    summary = pd.read_csv(tmp_path / "sweep" / "sweep_summary.csv").set_index("run")
    assert summary.loc["sw-ok", "status"] == "done" and summary.loc["sw-ok", "steps"] == 3
    assert summary.loc["sw-broken", "status"].startswith("FAILED")
    log = (tmp_path / "sweep" / "sw-broken" / "sweep.log").read_text().strip().splitlines()
    assert summary.loc["sw-broken", "last_log_line"] == log[-1].strip()
    assert f"sw-broken failed; last line of {tmp_path / 'sweep' / 'sw-broken' / 'sweep.log'}: {log[-1].strip()}" in res.stderr
    assert "sw-ok" in res.stdout and "FAILED" in res.stdout  # the printed table


@pytest.mark.slow
def test_sweep_script_is_the_library_main(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "train" / "sweep.py"), "--config", str(tmp_path / "none.yaml")],
                         capture_output=True, text=True, env=cli_env(), cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and res.stderr.strip() == f"error: sweep file {tmp_path / 'none.yaml'} does not exist"


def _start_sweep(path, out):
    """``train/sweep.py`` as a user starts it, in its own process group (what a scheduler kills)."""
    return subprocess.Popen([sys.executable, str(ROOT / "train" / "sweep.py"), "--config", str(path)], stdout=out,
                            stderr=subprocess.STDOUT, env=cli_env(), cwd=ROOT, start_new_session=True)


def _wait_for(marker, proc, seconds=300):
    """The pid of the worker paused at ``marker`` (``PauseAt`` writes it there)."""
    deadline = time.monotonic() + seconds
    while not (marker.exists() and marker.read_text().strip()):
        assert proc.poll() is None, f"the sweep ended (exit {proc.returncode}) before {marker.name} paused"
        assert time.monotonic() < deadline, f"{marker.name}: the run never reached its kill point"
        time.sleep(0.05)
    return int(marker.read_text())


@pytest.mark.slow
def test_killed_sweep_resumes_exactly_and_skips_finished_runs(tmp_path, monkeypatch):
    """A sweep of synthetic-language runs (one worker, in order): run 1 finishes; run 2's worker is SIGKILLed before
    the run's first resume checkpoint (step 2 of 6, checkpoints every 3) and the sweep goes on; run 3 is stopped
    after its step-3 checkpoint and validation (step 4) by SIGKILL to the whole sweep (driver and worker). Run
    again, the sweep skips run 1 and resumes runs 2 and 3, whose checkpoints, CSV and tidy tables (losses,
    measurements, CKA-to-final) then equal those of the same runs swept without interruption."""
    from tests.kill_resume import compare_outputs

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # every worker of every sweep here: equal float sums, whatever --workers
    sweep_set = {"trainer.max_steps": 6, "weight_rank.enabled": False}
    (tmp_path / "base").mkdir()
    base = _sweep_file(tmp_path / "base", set=sweep_set, grid={"seed_everything": [2, 3]})
    assert main(["--config", str(base), "--workers", "2"]) == 0

    killed_dir = tmp_path / "killed"
    killed_dir.mkdir()
    killed = _sweep_file(killed_dir, set=sweep_set, grid={"seed_everything": [1, 2, 3]})
    spec = yaml.safe_load(killed.read_text())
    pause = killed_dir / "pause.yaml"  # only the first invocation pauses (the CLI checks callbacks at the dry run)
    points = {"sw-seed_everything2": (2, "batch_end"), "sw-seed_everything3": (4, "batch_end")}
    pause.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "tests.helpers.callbacks.PauseAtRun",
         "init_args": {"run": run, "step": step, "where": where, "marker": str(killed_dir / f"{run}.paused")}}
        for run, (step, where) in points.items()]}}))
    first = killed_dir / "first.yaml"
    first.write_text(yaml.safe_dump({**spec, "configs": [*spec["configs"], str(pause)], "workers": 1}, sort_keys=False))
    with open(killed_dir / "first.log", "w") as out:
        proc = _start_sweep(first, out)
        try:
            os.kill(_wait_for(killed_dir / "sw-seed_everything2.paused", proc), signal.SIGKILL)  # the worker only
            _wait_for(killed_dir / "sw-seed_everything3.paused", proc)
            os.killpg(proc.pid, signal.SIGKILL)  # the whole sweep, as a scheduler ends a job
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    log = (killed_dir / "first.log").read_text()
    assert "sw-seed_everything1: done" in log and "sw-seed_everything2: FAILED (exit -9" in log, log
    root = killed_dir / "sweep"
    markers = root / ".sweep"
    assert sorted(p.name for p in markers.glob("*.done")) == ["sw-seed_everything1.done"]
    assert not (root / "sw-seed_everything2" / "lightning" / "last.ckpt").exists()  # killed before any checkpoint
    assert (root / "sw-seed_everything3" / "lightning" / "last.ckpt").exists()
    finished = {p: p.read_bytes() for p in (root / "sw-seed_everything1").rglob("*") if p.is_file()}

    res = subprocess.run([sys.executable, str(ROOT / "train" / "sweep.py"), "--config", str(killed)], capture_output=True,
                         text=True, env=cli_env(), cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "3 runs under" in res.stdout and "1 already done, 2 to run" in res.stdout
    assert {p: p.read_bytes() for p in (root / "sw-seed_everything1").rglob("*") if p.is_file()} == finished
    assert len([ln for ln in (root / "sw-seed_everything1" / "sweep.log").read_text().splitlines() if ln.startswith("$ ")]) == 1
    for run in points:
        commands = [ln for ln in (root / run / "sweep.log").read_text().splitlines() if ln.startswith("$ ")]
        assert len(commands) == 2 and "--ckpt_path" not in commands[0] and commands[1].endswith("--ckpt_path last")
        assert (markers / f"{run}.done").is_file()
        table = pd.read_parquet(store.table_path(root / run))
        assert {"train_loss", "val_loss", "excess_loss", "cka_final"} <= set(table["metric"])
        assert (problems := compare_outputs(tmp_path / "base" / "sweep" / run, root / run)) == [], problems
