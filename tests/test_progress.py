"""Progress lines in a log (stdout not a terminal) and the step-counted terminal bar, through the real CLI."""

import math
import re
import sys
from types import SimpleNamespace

import pandas as pd
import pytest

from lmdynamics.callbacks import progress as P
from tests.helpers.cli import run_cli, tiny_config

LINE = re.compile(
    r"^\[lmdynamics\] step (?P<step>\d+)/(?P<max>\d+) \((?P<pct>\d+)%\) \| train_loss (?P<loss>[\d.]+)"
    r"(?: \| val_loss (?P<val>[\d.]+) \(step (?P<val_step>\d+)\))? \| (?P<tps>[\d,]+) tokens/s"
    r" \| elapsed (?P<elapsed>\d+:\d\d:\d\d) \| ETA (?P<eta>\d+:\d\d:\d\d)$")


def seconds(clock: str) -> int:
    h, m, s = (int(x) for x in clock.split(":"))
    return 3600 * h + 60 * m + s


@pytest.mark.slow
def test_log_gets_periodic_progress_lines_with_the_logged_values(tmp_path):
    """Captured output (not a terminal, as with ``make train > log``), default cadence: a line after step 1, at
    least every 10% of max_steps, and after the last step; losses are the logged ones; the bar counts steps."""
    max_steps = 20  # 2 micro-batches a step; validation every 6 micro-batches = at the end of every 3rd step
    cfg = tiny_config(tmp_path, **{"trainer.max_steps": max_steps, "trainer.val_check_interval": 6,
                                   "trainer.enable_progress_bar": True, "data.global_batch_size": 8})
    done = run_cli("fit", "--config", str(cfg))
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    lines = [m.groupdict() for m in map(LINE.match, out.splitlines()) if m]
    assert len(lines) >= 11, out[-3000:]
    steps = [int(d["step"]) for d in lines]
    assert steps[0] == 1 and steps[-1] == max_steps and all(int(d["max"]) == max_steps for d in lines)
    assert all(b > a for a, b in zip(steps, steps[1:])), steps
    assert max(b - a for a, b in zip(steps, steps[1:])) <= max_steps // 10
    assert all(int(d["pct"]) == round(100 * int(d["step"]) / max_steps) for d in lines)

    run = tmp_path / "runs" / "tiny"
    csv = pd.read_csv(run / "csv" / "metrics.csv")
    train_loss = csv.dropna(subset=["train_loss"]).set_index("step")["train_loss"]
    table = pd.read_parquet(run / "metrics.parquet")
    val_loss = table[table.metric == "val_loss"].set_index("step")["value"]
    for d in lines:
        step = int(d["step"])
        assert float(d["loss"]) == pytest.approx(train_loss[step], abs=5e-5), d
        validated = [s for s in val_loss.index if s <= step]
        if not validated:
            assert d["val"] is None, d
        else:  # the latest validation at or before this step
            assert d["val_step"] is not None and int(d["val_step"]) == max(validated), d
            assert float(d["val"]) == pytest.approx(val_loss[int(d["val_step"])], abs=5e-5), d
        assert int(d["tps"].replace(",", "")) > 0

    etas, elapsed = [seconds(d["eta"]) for d in lines], [seconds(d["elapsed"]) for d in lines]
    assert etas[-1] == 0 and etas[0] >= etas[-1]
    assert all(b >= a for a, b in zip(elapsed, elapsed[1:]))
    for d, e, t in zip(lines, etas, elapsed):  # ETA = remaining steps x seconds per step so far, up to rounding
        step = int(d["step"])
        slack = 0.5 * (max_steps - step) / step + 1
        assert abs(e - (max_steps - step) * t / step) <= slack, d

    # the bar, drawn once at the end when output is not a terminal, counts optimizer steps (not 40 micro-batches)
    assert "Epoch 0/-2" not in out
    assert re.search(rf"^step\s+\S+ {max_steps}/{max_steps} ", out, re.M), out[-2000:]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def fake_trainer(max_steps=100):
    return SimpleNamespace(is_global_zero=True, global_step=0, max_steps=max_steps, callback_metrics={},
                           sanity_checking=False, state=SimpleNamespace(fn="fit"))


def test_eta_and_tokens_per_second_from_the_clock(monkeypatch, capsys):
    """ETA = remaining steps x wall time per step so far; tokens/s over the time since the previous line."""
    clock = Clock()
    monkeypatch.setattr(P.time, "monotonic", clock)
    cb, trainer, module = P.ProgressLines(when="always", every_seconds=30), fake_trainer(), SimpleNamespace(tokens_per_step=1000)
    cb.on_train_start(trainer, module)
    trainer.global_step, clock.now = 1, 2.0  # step 1: always a line
    trainer.callback_metrics["train_loss"] = 7.25
    cb.on_train_batch_start(trainer, module, None, 0)
    trainer.global_step, clock.now = 5, 20.0  # 18 s later, 4 steps: not due (30 s, 10 steps)
    cb.on_train_batch_start(trainer, module, None, 0)
    trainer.global_step, clock.now = 8, 40.0  # 38 s since the last line: due
    trainer.callback_metrics.update(train_loss=6.5, val_loss=6.75)
    cb.on_validation_end(trainer, module)
    first, second = capsys.readouterr().out.splitlines()
    assert first == "[lmdynamics] step 1/100 (1%) | train_loss 7.2500 | 500 tokens/s | elapsed 0:00:02 | ETA 0:03:18"
    assert second == ("[lmdynamics] step 8/100 (8%) | train_loss 6.5000 | val_loss 6.7500 (step 8) | 184 tokens/s"
                      " | elapsed 0:00:40 | ETA 0:07:40")
    trainer.global_step, clock.now = 18, 60.0  # 10 steps (a tenth of max_steps) since the last line, 20 s
    cb.on_train_batch_start(trainer, module, None, 0)
    trainer.global_step, clock.now = 100, 300.0
    cb.on_train_end(trainer, module)
    third, last = capsys.readouterr().out.splitlines()
    assert third.startswith("[lmdynamics] step 18/100 (18%)") and "| 500 tokens/s |" in third and third.endswith("ETA 0:04:33")
    assert last.endswith("| elapsed 0:05:00 | ETA 0:00:00") and "step 100/100 (100%)" in last


@pytest.mark.parametrize("when,tty,active", [("auto", True, False), ("auto", False, True), ("always", True, True),
                                             ("never", False, False)])
def test_lines_only_when_output_is_not_a_terminal_unless_told(monkeypatch, when, tty, active):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: tty, raising=False)
    cb = P.ProgressLines(when=when)
    cb.on_train_start(fake_trainer(), SimpleNamespace())
    assert cb.active is active


@pytest.mark.parametrize("kwargs,word", [({"when": "sometimes"}, "progress.when"), ({"every_seconds": -1}, "every_seconds"),
                                         ({"every_steps": 0}, "every_steps")])
def test_bad_settings_name_the_key(kwargs, word):
    with pytest.raises(ValueError, match=word):
        P.ProgressLines(**kwargs)


def test_clock():
    assert [P.clock(s) for s in (0, 59.6, 3599, 3600 * 27 + 61)] == ["0:00:00", "0:01:00", "0:59:59", "27:01:01"]
    assert P.clock(math.nan) == "?"
