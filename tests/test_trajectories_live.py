"""The live recorder through the real training CLI: the store fills at the checkpoint schedule, and recording the
same tokens offline from the saved checkpoints gives the same values (one function, two adapters)."""

import numpy as np
import pandas as pd
import pytest

from lmdynamics.commands.trajectories import main as trajectories_main
from lmdynamics.trajectories.storage import TrajectoryStore
from tests.helpers.cli import run_cli, tiny_config


@pytest.mark.slow
def test_live_trajectories_equal_offline_ones_from_the_checkpoints(tmp_path):
    cfg = tiny_config(tmp_path, **{"run.name": "live"})
    res = run_cli("fit", "--config", str(cfg), "--trajectories.enabled", "true", "--trajectories.num_blocks", "4")
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "runs" / "live"
    live = TrajectoryStore(run / "trajectories" / "live").read()
    saved = sorted(int(p.name[4:]) for p in (run / "checkpoints").iterdir())
    assert list(live.steps) == saved == [0, 1, 2, 3, 6]
    assert live.losses.shape == (4 * 31, 5) and list(live.tokens) == [s * 4 * 32 for s in saved]
    table = pd.read_parquet(run / "metrics.parquet")
    ppl = table[table.metric == "trajectory_val_ppl"].sort_values("step")
    np.testing.assert_allclose(ppl["value"], live.val_ppl)
    val = pd.read_csv(run / "csv" / "metrics.csv").dropna(subset=["val_loss"])  # the validation loop at step 6
    assert live.val_ppl[-1] == pytest.approx(float(np.exp(val[val.step == val.step.max()]["val_loss"].iloc[-1])), rel=1e-3)
    out = tmp_path / "offline"
    assert trajectories_main(["record", "--source", str(run), "--tokens-from", str(run / "trajectories" / "live"),
                              "--out", str(out)]) == 0
    offline = TrajectoryStore(out / "live").read()
    assert list(offline.steps) == saved
    np.testing.assert_allclose(offline.losses, live.losses, rtol=2.0 ** -10, atol=1e-6)  # within float16 rounding
    np.testing.assert_array_equal(offline.token_table.document, live.token_table.document)
