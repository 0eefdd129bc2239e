"""Resume through the real CLI: runs killed (SIGKILL, Ctrl-C) at chosen and at random points, under DDP too,
continue exactly; a finished run resumed writes nothing twice; ``validate`` leaves the run untouched.

The comparisons are those of ``tests/kill_resume.py`` (the kill test script): every micro-batch's token ids
and loss, the epoch, validation points, HF checkpoint weights, every CSV, tidy-table and TensorBoard value.
"""

import hashlib
import os
import random
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lmdynamics import store
from tests.helpers.cli import ROOT, cli_env, run_cli
from tests.kill_resume import Kill, kill_config, kill_test, random_kills, train_with_kills

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One uninterrupted run of the kill-test config (shared: the runs below compare with it or copy it)."""
    workdir = tmp_path_factory.mktemp("resume") / "uninterrupted"
    _, _, problems = train_with_kills(workdir, [])
    assert not problems, problems
    return workdir


def kills(text: str) -> list[Kill]:
    return [Kill.parse(k) for k in text.split()]


def test_kills_at_every_kind_of_point_resume_exactly(uninterrupted):
    """Before the first checkpoint, just before one (after the step, before it is committed), during the
    validation of a checkpoint step, just after one, inside gradient accumulation; SIGKILL and Ctrl-C."""
    points = kills("1:mid_accumulation:KILL 3:batch_end:INT 6:validation:KILL 6:batch_start:INT 8:mid_accumulation:KILL")
    assert kill_test(uninterrupted.parent / "chosen", points, baseline=uninterrupted) == []


def test_ctrl_c_and_sigterm_checkpoint_the_step_reached_and_the_printed_command_resumes_exactly(uninterrupted):
    """Interrupts between scheduled checkpoints (every 3 steps): after the optimizer step of step 2, during the
    validation of step 4, inside the accumulation of step 8. Each run checkpoints the step it reached (2, 5, 8),
    prints a resume command, and the next attempt runs that command as printed in a new shell; the result is
    the uninterrupted run, value for value."""
    points = kills("2:batch_end:INT 4:validation:TERM 7:mid_accumulation:INT")
    assert kill_test(uninterrupted.parent / "signals", points, baseline=uninterrupted, printed_resume=True) == []


def test_random_kills_resume_exactly(uninterrupted):
    seed = int(os.environ.get("KILL_SEED", random.SystemRandom().randrange(2**31)))
    points = random_kills(random.Random(seed), 3)
    problems = kill_test(uninterrupted.parent / "random", points, baseline=uninterrupted)
    assert problems == [], f"seed {seed} (rerun with KILL_SEED={seed}), kills {' '.join(map(str, points))}"


def test_ddp_two_processes_resume_exactly(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    points = kills("4:mid_accumulation:INT")
    problems = kill_test(tmp_path, points, devices=2, env_extra={"MASTER_PORT": str(port)})
    assert problems == []


def files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def copy_run(uninterrupted: Path, workdir: Path) -> tuple[Path, Path]:
    """A copy of the uninterrupted run and a config pointing at it."""
    workdir.mkdir(parents=True)
    cfg = kill_config(workdir)
    shutil.copytree(uninterrupted / "runs", workdir / "runs")
    return cfg, workdir / "runs" / "tiny"


def test_every_file_of_a_run_is_readable_by_its_group(uninterrupted):
    mask = os.umask(0)
    os.umask(mask)
    run = uninterrupted / "runs" / "tiny"
    modes = {str(p.relative_to(run)): stat.S_IMODE(p.stat().st_mode) for p in run.rglob("*") if p.is_file()}
    assert {"checkpoints/step00000012/model.safetensors", "activations/step00000012.safetensors", "probe.safetensors"} <= set(modes)
    assert {k: oct(v) for k, v in modes.items() if v != 0o666 & ~mask} == {}


def test_resuming_a_finished_run_changes_no_value_and_duplicates_no_row(uninterrupted, tmp_path):
    cfg, run = copy_run(uninterrupted, tmp_path / "w")
    before = files(run)
    res = run_cli("fit", "--config", str(cfg), "--ckpt_path", "last")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "already finished" in res.stderr
    after = files(run)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert all(k.startswith("metrics.parquet/") for k in changed), changed  # only the table's parts (rewritten)
    table = pd.read_parquet(store.table_path(run))
    original = pd.read_parquet(store.table_path(uninterrupted / "runs" / "tiny"))
    key = list(store.KEY)
    assert not table.duplicated(subset=key).any()
    assert table.sort_values(key).reset_index(drop=True).equals(original.sort_values(key).reset_index(drop=True))


def test_resuming_a_finished_run_says_so_and_redoes_nothing(uninterrupted, tmp_path):
    """Its end-of-run work was done: not again (no report drawn, no table rewritten, no file touched)."""
    cfg, run = copy_run(uninterrupted, tmp_path / "w")
    before = files(run)
    res = run_cli("fit", "--config", str(cfg), "--ckpt_path", "last", "--run.report", "true")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "already finished" in res.stderr.strip().splitlines()[-1]
    assert files(run) == before and not (run / "report").exists()


def test_validate_writes_beside_the_run_with_the_checkpoint_step(uninterrupted, tmp_path):
    cfg, run = copy_run(uninterrupted, tmp_path / "w")
    before = files(run)
    for _ in range(2):  # twice: the second replaces the first's output
        res = run_cli("validate", "--config", str(cfg), "--ckpt_path", "last")
        assert res.returncode == 0, res.stderr[-2000:]
        assert "val_loss" in res.stdout
    after = files(run)
    out = "evaluations/validate-step00000012/"
    assert {k: v for k, v in after.items() if not k.startswith(out)} == before  # the run itself is untouched
    assert not [p for p in (run / "evaluations").iterdir() if p.name.startswith(".")]  # no temporary left
    table = pd.read_parquet(store.table_path(run / out))
    assert set(table.step) == {12} and set(table.run) == {"tiny"} and "val_loss" in set(table.metric)
    assert not table.duplicated(subset=list(store.KEY)).any()
    csv = pd.read_csv(run / out / "csv" / "metrics.csv")
    assert set(csv.step) == {12} and csv.val_loss.notna().any()
    fit_val = pd.read_parquet(store.table_path(run)).query("metric == 'val_loss' and step == 12").value.iloc[0]
    assert table.query("metric == 'val_loss'").value.iloc[0] == fit_val  # the same weights, the same number


def test_validate_of_a_file_that_is_no_checkpoint_is_one_line_and_writes_nothing(uninterrupted, tmp_path):
    cfg, run = copy_run(uninterrupted, tmp_path / "w")
    bogus = tmp_path / "bogus.ckpt"
    bogus.write_bytes(b"not a checkpoint")
    res = run_cli("validate", "--config", str(cfg), "--ckpt_path", str(bogus))
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "bogus.ckpt" in last and "not a readable Lightning checkpoint" in last
    assert not (run / "evaluations").exists()


def test_cka_to_final_computed_again_replaces_its_rows(uninterrupted, tmp_path):
    """`analysis/convergence.py RUN` on a finished run (twice): the same rows, none twice, for any reader."""
    _, run = copy_run(uninterrupted, tmp_path / "w")
    original = pd.read_parquet(store.table_path(run))
    for _ in range(2):
        res = subprocess.run([sys.executable, str(ROOT / "analysis" / "convergence.py"), str(run)], capture_output=True,
                             text=True, env=cli_env(), cwd=ROOT, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
    table = pd.read_parquet(store.table_path(run))
    key = list(store.KEY)
    assert not table.duplicated(subset=key).any() and len(table) == len(original)
    assert table.sort_values(key).reset_index(drop=True).equals(original.sort_values(key).reset_index(drop=True))
