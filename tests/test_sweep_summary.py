"""A sweep's bookkeeping and summary without training (fast): which runs run, resume or are skipped, and the
summary's numbers read from each run's table; the runs' processes are replaced by a stand-in that writes what a
run writes. The real runs: tests/test_sweep.py (slow)."""

import json
import os
import shlex
from pathlib import Path

import pandas as pd

from lmdynamics import store, sweep
from lmdynamics.compare.runs import RISE_MARGIN


def _plan(tmp_path, overrides=None):
    (tmp_path / "base.yaml").write_text("{}\n")
    spec = {"name": "sw", "root": str(tmp_path / "root"), "configs": [str(tmp_path / "base.yaml")],
            "grid": {"model.model.hidden_size": [8, 16, 32], "seed_everything": [1]}}
    return sweep.expand(spec, overrides)


def _table(directory, name, val, events=0, excess=None):
    rows = [{"run": name, "model": "m", "step": s, "tokens": s, "layer": -1, "component": "model", "metric": "val_loss",
             "value": v} for s, v in val.items()]
    rows += [{"run": name, "model": "m", "step": s, "tokens": s, "layer": -1, "component": "model", "metric": "excess_loss",
              "value": v} for s, v in (excess or {}).items()]
    rows += [{"run": name, "model": "m", "step": 10 + i, "tokens": 0, "layer": -1, "component": "head",
              "metric": "saturation_event", "value": 1.0} for i in range(events)]
    store.append(store.table_path(directory), rows)


def test_summary_rows_read_each_runs_numbers_and_say_how_it_saturated(tmp_path):
    plan = _plan(tmp_path, {"optim.lr": 0.001, "trainer.precision": "32"})
    a, b, c = plan.runs
    _table(plan.root / a.name, a.name, {30: 2.5, 10: 3.0, 20: 2.2}, events=2, excess={30: 0.5, 10: 1.0})
    _table(plan.root / b.name, b.name, {10: 3.0, 20: 2.2, 30: 2.2 + RISE_MARGIN + 0.01})
    _table(plan.root / c.name, c.name, {10: 3.0, 20: 2.2, 30: 2.2 + RISE_MARGIN - 0.01})
    row = sweep.summary_row(plan, a, "done", 12.345)
    assert row == {"run": a.name, "status": "done", "seconds": 12.3, "log": str(plan.log(a)),
                   "overrides": "optim.lr=0.001; trainer.precision=32", "steps": 30, "final_val_loss": 2.5,
                   "best_val_loss": 2.2, "final_excess_loss": 0.5, "saturation": "event"}
    assert sweep.summary_row(plan, b, "done", None)["saturation"] == "late rise"
    assert sweep.summary_row(plan, c, "done", None)["saturation"] == "no"
    assert sweep.summary_row(plan, c, "done", None)["seconds"] is None


def test_a_run_that_did_not_finish_shows_its_logs_last_line_and_no_numbers_without_a_table(tmp_path):
    plan = _plan(tmp_path)
    run = plan.runs[0]
    plan.log(run).parent.mkdir(parents=True)
    plan.log(run).write_text("$ lmdynamics fit\nstep 3\nValueError: bad thing\n\n  \n")
    row = sweep.summary_row(plan, run, "FAILED (exit 1)", 1.0)
    assert row["last_log_line"] == "ValueError: bad thing" and "final_val_loss" not in row and "saturation" not in row
    assert "last_log_line" not in sweep.summary_row(plan, run, "done", 1.0)
    plan.log(run).write_bytes(b"ok\n\xff\xfe broken bytes\n")  # not UTF-8: replaced, not an error
    assert sweep.summary_row(plan, run, "FAILED (exit 1)", 1.0)["last_log_line"] == "\ufffd\ufffd broken bytes"
    plan.log(run).write_text("\n  \n")
    assert sweep.summary_row(plan, run, "FAILED (exit 1)", 1.0)["last_log_line"] == ""
    assert sweep.summary_row(plan, plan.runs[1], "FAILED (exit 1)", 1.0)["last_log_line"] == ""  # no log yet


def test_the_printed_summary_aligns_its_columns_and_writes_missing_numbers_as_a_dash():
    rows = [{"run": "a", "status": "done", "steps": 30, "final_val_loss": 2.123456, "best_val_loss": float("nan"),
             "final_excess_loss": None, "saturation": "no", "seconds": 1234.5},
            {"run": "longer-name", "status": "FAILED (exit 1)", "steps": 3}]
    lines = sweep._format_summary(rows).splitlines()
    assert lines[0].split() == sweep.SUMMARY_COLUMNS[:8]
    assert lines[1].split() == ["a", "done", "30", "2.123", "-", "-", "no", "1234"]  # 4 significant digits
    assert lines[2].split() == ["longer-name", "FAILED", "(exit", "1)", "3", "-", "-", "-", "-", "-"]
    starts = [lines[0].index(c) for c in sweep.SUMMARY_COLUMNS[:8]]
    assert lines[1].index("done") == starts[1] and lines[2].index("3 ") == starts[2]  # each column starts alike
    assert lines[1].index("2.123") == starts[3] and lines[1].index("1234") == starts[7]  # also after narrow values


def test_run_all_runs_new_and_started_runs_resuming_the_started_and_summarises_all(tmp_path, monkeypatch, capsys):
    plan = _plan(tmp_path)
    done, started, new = plan.runs
    plan.marker(done).parent.mkdir(parents=True)
    plan.marker(done).write_text(json.dumps({"seconds": 7.0}))
    _table(plan.root / done.name, done.name, {10: 2.0})
    (plan.root / started.name / "lightning").mkdir(parents=True)  # training had begun: resume it
    calls = []
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = str(max(1, (os.cpu_count() or 1) // 1))

    def fake_run(command, stdout, stderr, env, cwd):
        calls.append(command)
        name = command[command.index("--run.name") + 1]
        # the run's output goes to its log, after the command line; one thread share each; run from here
        assert stdout.name == str(plan.root / name / "sweep.log") and stderr == sweep.subprocess.STDOUT
        assert env["OMP_NUM_THREADS"] == threads and env["PATH"] == os.environ["PATH"] and cwd == os.getcwd()
        stdout.flush()
        assert Path(stdout.name).read_text().splitlines()[-1] == "$ " + shlex.join(command)
        if name == new.name:
            return type("Done", (), {"returncode": 3})()
        _table(plan.root / name, name, {10: 2.5})
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(sweep.subprocess, "run", fake_run)
    assert sweep.run_all(plan, workers=1) == 1  # one run failed
    assert [c[c.index("--run.name") + 1] for c in calls] == [started.name, new.name]
    assert calls[0][-2:] == ["--ckpt_path", "last"] and "--ckpt_path" not in calls[1]
    fit = calls[1].index("fit")
    assert calls[1][fit + 1: fit + 3] == ["--config", str(tmp_path / "base.yaml")]  # the sweep's configs first
    assert plan.marker(started).is_file() and not plan.marker(new).exists()
    marker = json.loads(plan.marker(started).read_text())
    assert marker["settings"] == started.settings and 0 <= marker["seconds"] < 60
    summary = pd.read_csv(plan.root / sweep.SUMMARY)
    assert list(summary.columns) == sweep.SUMMARY_COLUMNS
    assert summary["status"].tolist() == ["done (earlier)", "done", "FAILED (exit 3)"]
    assert summary["final_val_loss"].tolist()[:2] == [2.0, 2.5] and summary["seconds"].iloc[0] == 7.0
    assert summary["seconds"].iloc[1:].between(0, 60).all()  # the runs done now carry their own time too
    out = capsys.readouterr()
    assert f"{new.name} failed" in out.err and "1 run(s) failed" in out.err
    assert "3 runs under" in out.out and "1 already done, 2 to run with 1 worker(s)" in out.out
    assert f"{started.name}: done in" in out.out and f"{new.name}: FAILED (exit 3, log {plan.log(new)})" in out.out
    calls.clear()
    assert sweep.run_all(plan, workers=1) == 1  # again: only the failed run runs (it never started: from scratch)
    assert [c[c.index("--run.name") + 1] for c in calls] == [new.name] and "--ckpt_path" not in calls[0]
    monkeypatch.setattr(sweep.subprocess, "run", lambda command, **kw: type("Done", (), {"returncode": 0})())
    assert sweep.run_all(plan, workers=1) == 0  # every run done: exit 0
    fresh = sweep.expand({"name": "f", "root": str(tmp_path / "new" / "root"), "configs": [str(tmp_path / "base.yaml")],
                          "grid": {"seed_everything": [1]}})
    assert sweep.run_all(fresh, workers=1) == 0 and fresh.marker(fresh.runs[0]).is_file()  # its root made on the way


def test_printed_commands_comment_out_finished_runs_and_resume_started_ones(tmp_path):
    plan = _plan(tmp_path)
    done, started, new = plan.runs
    plan.marker(done).parent.mkdir(parents=True)
    plan.marker(done).write_text("{}")
    (plan.root / started.name / "lightning").mkdir(parents=True)
    plan.log(new).parent.mkdir(parents=True)
    plan.log(new).write_text("$ opened before the run starts\n")  # a sweep log alone: not started
    lines = sweep.printed_commands(plan)
    assert lines[0].startswith("# done: ") and not lines[1].startswith("#") and not lines[2].startswith("#")
    assert lines[1].endswith("--ckpt_path last") and "--ckpt_path" not in lines[2]
    assert [plan.state(r) for r in plan.runs] == ["done", "started", "new"]


def test_structured_grid_values_name_runs_by_content_whatever_the_key_order(tmp_path):
    """A grid value that is a mapping or a list names its run by a digest of its content: distinct values give
    distinct names, the same mapping written with its keys in another order gives the same name (a sweep file
    edited that way finds its runs again), and the name part is the key's leaf then hex digits."""
    (tmp_path / "base.yaml").write_text("{}\n")

    def names(values):
        spec = {"name": "sw", "root": str(tmp_path / "root"), "configs": [str(tmp_path / "base.yaml")],
                "grid": {"model.model.head": values}}
        return [run.name for run in sweep.expand(spec).runs]

    a, b = {"kind": "low_rank", "rank": 4}, {"kind": "low_rank", "rank": 8}
    first = names([a, b, [1, 2], [2, 1]])
    assert len(set(first)) == 4
    assert names([{"rank": 4, "kind": "low_rank"}, {"rank": 8, "kind": "low_rank"}, [1, 2], [2, 1]]) == first
    for name in first:
        part = name.removeprefix("sw-")
        assert part.startswith("head") and len(part) > 4 and all(c in "0123456789abcdef" for c in part[4:]), name
