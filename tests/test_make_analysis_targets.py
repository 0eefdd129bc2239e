"""`make saturation` and `make trajectories` through make itself, on a tiny training run given as RUN_DIR (their
default is runs/demo, the run of `make train`): what they write, and the one line when the run does not exist."""

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.helpers.cli import ROOT, cli_env, run_cli, tiny_config
from lmdynamics.trajectories.storage import TrajectoryStore

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def make(*args):
    """make with the test's interpreter as $(PY), the install stamp taken as done (-o: never rebuilt here)."""
    return subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", f"PY={sys.executable}", *args],
                          capture_output=True, text=True, cwd=ROOT, env=cli_env(), timeout=600)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("maketargets")
    cfg = tiny_config(tmp, **{"trainer.max_steps": 10, "trainer.val_check_interval": 2,
                              "checkpoints": {"every": 1, "log_cap": 1}})
    res = run_cli("fit", "--config", str(cfg))
    assert res.returncode == 0, res.stderr[-3000:]
    return tmp / "runs" / "tiny"


@pytest.mark.slow
def test_help_lists_both_targets():
    out = make("help").stdout
    assert "make saturation" in out and "make trajectories" in out and "RUN_DIR" in out


@pytest.mark.slow
def test_make_trajectories_records_and_reports_the_run(run):
    res = make("trajectories", f"RUN_DIR={run}")
    assert res.returncode == 0, res.stderr[-3000:]
    traj = TrajectoryStore(run / "trajectories" / "tiny").read()
    saved = sorted(int(p.name[4:]) for p in (run / "checkpoints").iterdir())
    assert list(traj.steps) == saved == list(range(11)) and traj.losses.shape == (8 * 31, 11)  # all 8 validation blocks of the tiny run
    val = pd.read_csv(run / "csv" / "metrics.csv").dropna(subset=["val_loss"])
    last = val[val.step == val.step.max()]["val_loss"].iloc[-1]  # the run's own validation at its last step
    assert traj.val_ppl[-1] == pytest.approx(float(np.exp(last)), rel=1e-3)
    report = run / "trajectories-report"
    shares = pd.read_csv(report / "shares.csv")
    assert {"all", "frequency", "token_class"} == set(shares.breakdown) and (report / "report.md").is_file()
    np.testing.assert_allclose(shares.groupby(["start_fraction", "breakdown", "group"])["share"].sum(), 1.0)
    assert sorted(shares.start_fraction.unique()) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    before = (run / "trajectories" / "tiny" / "losses.f16").stat().st_size
    assert make("trajectories", f"RUN_DIR={run}", f"ARGS=--out {run / 'again'}").returncode == 0  # nothing recorded twice
    assert (run / "trajectories" / "tiny" / "losses.f16").stat().st_size == before and (run / "again" / "report.md").is_file()


@pytest.mark.slow
def test_make_saturation_analyses_the_runs_validation_loss(run):
    res = make("saturation", f"RUN_DIR={run}")
    assert res.returncode == 0, res.stderr[-3000:]
    table = pd.read_csv(run / "saturation" / "saturation.csv")
    assert table.metric.tolist() == ["val_loss"] and table.final_step.item() == 10
    assert list((run / "saturation" / "figures").glob("*.png")) and (run / "saturation" / "report.md").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("target", ["saturation", "trajectories"])
def test_a_missing_run_is_one_line_saying_train_first(target, tmp_path):
    missing = tmp_path / "runs" / "demo"
    res = make(target, f"RUN_DIR={missing}")
    assert res.returncode != 0
    ours = [line for line in res.stderr.splitlines() if not line.startswith("make")]  # make adds its own "Error" line
    assert len(ours) <= 1 and "run make train first" in res.stderr, res.stderr
    assert not (tmp_path / "runs").exists()
