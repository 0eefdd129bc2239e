"""Sweeps: grid expansion, validation through the real CLI's dry run, parallel resumable execution."""

import datetime
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lmdynamics import store
from lmdynamics.commands.sweep import main
from lmdynamics.sweep import SweepError, check_override_keys, expand, parse_overrides, run_all, validate
from tests.helpers.cli import ROOT, cli_env, tiny_config
from tests.helpers.encoding import ascii_locale


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


def test_a_sweep_file_without_name_root_or_workers_gets_the_defaults_and_takes_one_config_as_a_string(tmp_path):
    cfg = tmp_path / "base.yaml"
    cfg.write_text("{}\n")
    plain = expand({"grid": {"seed_everything": [1]}})
    assert (plain.name, plain.root, plain.workers, plain.configs) == ("sweep", Path("runs/sweep"), 1, [])
    assert [r.name for r in plain.runs] == ["sweep-seed_everything1"]
    named = expand({"name": "b", "configs": str(cfg), "workers": 3})  # no grid: one run, named after the sweep
    assert (named.name, named.root, named.workers, named.configs) == ("b", Path("runs/b"), 3, [str(cfg)])
    assert [r.name for r in named.runs] == ["b"]
    cmd = named.command(named.runs[0])
    assert cmd[cmd.index("--config") + 1] == str(cfg) and cmd[cmd.index("--run.root") + 1] == "runs/b"


def test_the_command_resumes_only_when_asked_and_puts_runs_under_the_sweeps_root(tmp_path):
    plan = expand({"name": "sw", "root": str(tmp_path / "r"), "grid": {"seed_everything": [1]}})
    run = plan.runs[0]
    cmd = plan.command(run)
    assert "--ckpt_path" not in cmd and cmd[cmd.index("--run.root") + 1] == str(tmp_path / "r")
    assert cmd[cmd.index("--run.name") + 1] == "sw-seed_everything1"
    assert plan.command(run, resume=True) == [*cmd, "--ckpt_path", "last"]


def test_grid_points_with_one_run_name_collapse_when_alike_and_are_refused_when_they_differ():
    pooled = expand({"grid": [{"seed_everything": [1, 2]}, {"seed_everything": [2, 3]}]})
    assert [r.name for r in pooled.runs] == [f"sweep-seed_everything{s}" for s in (1, 2, 3)]
    with pytest.raises(SweepError, match="two different runs are both named sweep-head"):
        expand({"grid": [{"intervention": {"head": {"model.model.head.kind": "mos"}}},
                         {"intervention": {"head": {"model.model.head.kind": "low_rank"}}}]})


@pytest.mark.parametrize("bundles", [{}, {"mos": "model.model.head.kind=mos"}])
def test_a_bundle_axis_must_map_names_to_settings(bundles):
    with pytest.raises(SweepError, match="a bundle axis maps names to settings"):
        expand({"grid": {"intervention": bundles}})


def test_run_names_keep_letters_digits_and_dot_plus_equals_and_replace_other_characters():
    plan = expand({"name": "sw", "grid": [{"data.path": ["Data/v1 final+x=2.txt", "ÄB"]},
                                         {"model.model.head": [[1, 2], {"kind": "mos"}]}]})
    names = [r.name for r in plan.runs]
    assert names[:2] == ["sw-pathData_v1_final+x=2.txt", "sw-path_B"]  # upper case kept, one directory name
    assert all(re.fullmatch(r"sw-head[0-9a-f]{8}", n) for n in names[2:]) and names[2] != names[3], names
    dated = expand(yaml.safe_load("grid: {data.days: [[2024-01-02], [2024-01-03]]}"))  # YAML dates inside a value
    assert [r.args for r in dated.runs] == [["--data.days", '["2024-01-02"]'], ["--data.days", '["2024-01-03"]']]
    assert all(re.fullmatch(r"sweep-days[0-9a-f]{8}", r.name) for r in dated.runs) and len({r.name for r in dated.runs}) == 2


def test_set_items_split_at_the_first_equals_sign_and_read_the_value_as_yaml():
    assert parse_overrides(["a=b=c", " n = 400", "e=", "s=  ", "k=mos", "bad=[1, 2", "d=2024-01-02"]) == {
        "a": "b=c", "n": 400, "e": "", "s": "", "k": "mos", "bad": "[1, 2", "d": datetime.date(2024, 1, 2)}


_PRINTED_CONFIG = {"seed_everything": 1, "data": None,
                   "trainer": {"max_steps": 10, "callbacks": None, "logger": {"save_dir": "x"}},
                   "model": {"optim": {"lr": 0.1}, "head": {"kind": "plain", "rank": None}}}


def _print_config(argv):
    """A stand-in for the training CLI's ``--print_config`` that also talks on stderr."""
    sys.stderr.write("a warning from the CLI\n")
    sys.stdout.write(yaml.safe_dump(_PRINTED_CONFIG))


@pytest.mark.parametrize("keys", [["trainer.max_steps", "model.head", "model.optim.lr"],  # leaves and subtrees
                                  ["trainer.callbacks.0.class_path", "data.source", "data.synthetic.rank"]])  # under null
def test_set_keys_that_exist_or_sit_under_an_open_ended_key_are_accepted_quietly(keys, capsys):
    check_override_keys(expand({"grid": {"seed_everything": [1]}}, {k: 1 for k in keys}), _print_config)
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("keys, message", [
    (["trainer.max_steps", "trainer.max_stepz"], "--set trainer.max_stepz: the training config has no such key; "
                                                 "keys under trainer: callbacks, logger, max_steps"),
    (["trainer.max_stepz.x"], "--set trainer.max_stepz.x: the training config has no such key; "
                              "keys under trainer: callbacks, logger, max_steps"),  # the deepest known parent
    (["model.optimizer.lr"], "--set model.optimizer.lr: the training config has no such key; keys under model: head, optim"),
    (["traner.max_steps"], "--set traner.max_steps: the training config has no such key; "
                           "top-level keys: data, model, seed_everything, trainer"),
])
def test_an_unknown_set_key_names_the_keys_at_its_deepest_known_parent(keys, message):
    with pytest.raises(SweepError) as err:
        check_override_keys(expand({"grid": {"seed_everything": [1]}}, {k: 1 for k in keys}), _print_config)
    assert str(err.value) == message


@pytest.mark.parametrize("stderr, reason", [
    ("usage: lmdynamics fit\nerror: Parser key 'x': bad\n  more detail\n", "Parser key 'x': bad"),  # the error line
    ("Traceback (most recent call last):\n  File 'x.py'\nValueError: rank 64 > d\n", "ValueError: rank 64 > d"),  # else the last
    ("ValueError: one line\n", "ValueError: one line"),
    ("", "exit status 3"),  # nothing said
])
def test_a_failed_dry_run_is_one_line_naming_the_run_and_the_reason(capsys, stderr, reason):
    def cli_main(argv):
        sys.stdout.write("the architecture...\n")
        sys.stderr.write(stderr)
        return 3

    plan = expand({"name": "sw", "grid": {"seed_everything": [1]}})
    with pytest.raises(SweepError) as err:
        validate(plan, cli_main)
    assert str(err.value) == f"sweep run sw-seed_everything1: {reason}"
    assert capsys.readouterr() == ("", "")  # what the CLI said is not shown


def test_a_passing_dry_run_prints_nothing(capsys):
    def cli_main(argv):
        sys.stdout.write("the architecture...\n")
        return 0

    validate(expand({"name": "sw", "grid": {"seed_everything": [1, 2]}}), cli_main)
    assert capsys.readouterr() == ("", "")


def _done(returncode=0):
    return type("Done", (), {"returncode": returncode})()


@pytest.mark.parametrize("cpus, workers, omp, threads", [(8, 2, None, "4"), (2, 4, None, "1"), (None, 1, None, "1"),
                                                         (8, 2, "3", "3")])
def test_each_run_gets_its_share_of_the_cores_unless_omp_num_threads_is_set(tmp_path, monkeypatch, capsys, cpus,
                                                                            workers, omp, threads):
    plan = expand({"name": "sw", "root": str(tmp_path / "root"), "grid": {"seed_everything": [1, 2, 3]}})
    seen, running, most = [], [], []
    lock = threading.Lock()

    def fake_run(command, stdout, stderr, env, cwd):
        with lock:
            running.append(command)
            most.append(len(running))
        time.sleep(0.05)
        seen.append(env["OMP_NUM_THREADS"])
        with lock:
            running.remove(command)
        return _done()

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert run_all(plan, workers) == 0
    assert seen == [threads] * 3 and max(most) <= workers  # no more runs at once than workers
    assert f"0 already done, 3 to run with {workers} worker(s)" in capsys.readouterr().out


def test_run_all_names_the_set_overrides_and_counts_hand_made_markers_as_done(tmp_path, capsys):
    root = tmp_path / "root"
    header = ("[sweep] sw: 2 runs under {root}{extra}, 2 already done, 0 to run with 1 worker(s); "
              "each run's log: {root}/NAME/sweep.log")
    for overrides, extra in (({}, ""), ({"trainer.max_steps": 2, "model.model.head.kind": "mos"},
                                        " (--set trainer.max_steps=2, model.model.head.kind=mos)")):
        plan = expand({"name": "sw", "root": str(root), "grid": {"seed_everything": [1, 2]}}, overrides)
        for run in plan.runs:  # finished runs marked by hand: an empty marker
            plan.marker(run).parent.mkdir(parents=True, exist_ok=True)
            plan.marker(run).touch()
        assert run_all(plan, 1) == 0
        assert capsys.readouterr().out.splitlines()[0] == header.format(root=root, extra=extra)
        summary = pd.read_csv(root / "sweep_summary.csv")
        assert summary["status"].tolist() == ["done (earlier)"] * 2 and summary["seconds"].isna().all()


def test_a_runs_log_marker_and_summary_hold_its_settings_whatever_the_locale(tmp_path, monkeypatch, capsys):
    """The log (the command line, then the run's UTF-8 output) is UTF-8 whatever the locale; a finished run's
    marker holds its time and settings, a value that JSON has no type for (a YAML date) written as a string."""
    overrides = parse_overrides(["data.start=2024-01-02", "data.days=[2024-01-03, 4]", "run.note=héllo"])
    plan = expand({"name": "sw", "root": str(tmp_path / "root"), "grid": {"seed_everything": [1, 2]}}, overrides)
    ok, broken = plan.runs
    cmd = plan.command(ok)  # the CLI reads the date as the user wrote it
    assert cmd[cmd.index("--data.start") + 1] == "2024-01-02" and cmd[cmd.index("--data.days") + 1] == '["2024-01-03", 4]'

    def fake_run(command, stdout, stderr, env, cwd):
        os.write(stdout.fileno(), "step 1\nValueError: wörld\n".encode())  # a child process writes UTF-8 bytes
        return _done(0 if command[command.index("--run.name") + 1] == ok.name else 1)

    monkeypatch.setattr(subprocess, "run", fake_run)
    with ascii_locale():
        assert run_all(plan, 1) == 1
    for run in plan.runs:
        lines = plan.log(run).read_text(encoding="utf-8").splitlines()
        assert lines == ["$ " + shlex.join(plan.command(run)), "step 1", "ValueError: wörld"]
    marker = json.loads(plan.marker(ok).read_text())
    assert marker["settings"] == {"seed_everything": 1, "data.start": "2024-01-02", "data.days": ["2024-01-03", 4],
                                  "run.note": "héllo"}
    assert 0 <= marker["seconds"] < 60 and not plan.marker(broken).exists()
    summary = pd.read_csv(tmp_path / "root" / "sweep_summary.csv").set_index("run")
    assert summary.loc[broken.name, "last_log_line"] == "ValueError: wörld"
    assert f"{broken.name} failed; last line of {plan.log(broken)}: ValueError: wörld" in capsys.readouterr().err


def test_a_run_the_cli_refuses_to_start_is_reported_failed_and_the_others_go_on(tmp_path, monkeypatch, capsys):
    """Run without ``validate`` (a library caller), a bundle named with a '/' reaches the CLI, which refuses a
    run name that is not one directory name: that run fails like any other, the sweep goes on and says so."""
    plan = expand({"name": "sw", "root": str(tmp_path / "root"), "grid": {"intervention": {"a/b": {}, "ok": {}}}})
    refused, ok = plan.runs

    def fake_run(command, stdout, stderr, env, cwd):
        if command[command.index("--run.name") + 1] == ok.name:
            return _done()
        os.write(stdout.fileno(), b"error: run.name 'sw-a/b' must be one directory name\n")
        return _done(2)

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert run_all(plan, 1) == 1
    summary = pd.read_csv(tmp_path / "root" / "sweep_summary.csv").set_index("run")
    assert summary.loc[refused.name, "status"] == "FAILED (exit 2)" and summary.loc[ok.name, "status"] == "done"
    assert summary.loc[refused.name, "last_log_line"] == "error: run.name 'sw-a/b' must be one directory name"
    assert plan.marker(ok).is_file() and "1 run(s) failed: sw-a/b" in capsys.readouterr().err
