"""Callbacks under DDP (2 CPU processes over gloo, through the real CLI) and ZeRO-3 gathering (DeepSpeed on CPU)."""

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lmdynamics import store
from tests.helpers.cli import ROOT, run_cli, tiny_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_processes_measure_once_and_match_one_process(tmp_path):
    common = {"probe": {"num_sequences": 12, "positions": 2, "batch_size": 4}, "trainer.max_steps": 3}
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    peak = ["--model.speed.peak_tflops", "0.001"]  # a CPU has no known peak: MFU is logged against this one
    res = run_cli("fit", "--config", str(tiny_config(one, **common)), "--data.batch_size", "4", "--run.report", "false",
                  *peak)
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_cli("fit", "--config", str(tiny_config(two, **common)), "--data.batch_size", "2",
                  "--trainer.devices", "2", "--trainer.strategy", "ddp", "--run.report", "false", *peak,
                  env_extra={"MASTER_PORT": str(free_port())})
    assert res.returncode == 0, res.stderr[-3000:]
    a = store.read_table(store.table_path(one / "runs" / "tiny"), latest=False)
    b = store.read_table(store.table_path(two / "runs" / "tiny"), latest=False)
    key = list(store.KEY)
    assert not b.duplicated(subset=key).any()  # rank 1 wrote nothing twice
    timings = ["measure_seconds"]  # wall time, not a measurement of the model
    measured = ~b.component.eq("model") & ~b.metric.isin(timings)
    merged = a[~a.component.eq("model") & ~a.metric.isin(timings)].merge(b[measured], on=key, suffixes=("_one", "_two"))
    assert len(merged) == measured.sum() > 100
    # same initial weights and probe: step-0 measurements agree up to float summation order (CKA-to-final
    # compares with the final step and so depends on training)
    step0 = merged[(merged.step == 0) & ~merged.metric.isin(["cka_final", "converged_fraction"])]
    assert len(step0) > 50
    assert np.allclose(step0.value_one, step0.value_two, rtol=1e-4, atol=1e-5, equal_nan=True)  # inf == inf too
    later = merged[(merged.step > 0) | merged.metric.isin(["cka_final", "converged_fraction"])]  # same global batches of 4 blocks, gradients averaged over 2 ranks
    assert np.allclose(later.value_one, later.value_two, rtol=1e-2, atol=1e-3, equal_nan=True)
    # the model's own rows (the training and validation losses as sums reduced over the ranks, the token counts of
    # every rank's blocks, the gradient norm, the learning rate) are one process's; timings are not compared
    speed = ["measure_share", "model_tflops", "tokens_per_sec", "mfu", "step_seconds"]
    rows = [t[t.component.eq("model") & ~t.metric.isin(speed)] for t in (a, b)]
    model = rows[0].merge(rows[1], on=key, how="outer", suffixes=("_one", "_two"), indicator=True)
    assert (model._merge == "both").all() and {"train_loss", "val_loss", "tokens", "grad_norm"} <= set(model.metric)
    assert (model.tokens_one == model.tokens_two).all() and (model.tokens_two == model.step * 4 * 32).all()
    assert np.allclose(model.value_one, model.value_two, rtol=1e-5, atol=1e-6)
    # MFU is the global model FLOP rate over the peak of every device: model_tflops / (peak x world size)
    for table, world in ((a, 1), (b, 2)):
        speeds = table[table.component.eq("model")].pivot_table(index="step", columns="metric", values="value")
        assert len(speeds) >= 3
        assert np.allclose(speeds.mfu, speeds.model_tflops / (0.001 * world), rtol=1e-9)
    assert (two / "runs" / "tiny" / "checkpoints" / "step00000003").is_dir()


@pytest.mark.slow
def test_zero3_parameters_are_gathered_one_at_a_time():
    pytest.importorskip("deepspeed")
    res = subprocess.run([sys.executable, str(ROOT / "tests" / "helpers" / "zero3_check.py"), str(free_port())],
                         capture_output=True, text=True, cwd=ROOT, timeout=600,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert "zero3 ok" in res.stdout


@pytest.mark.gpu
def test_deepspeed_strategy_end_to_end(tmp_path):
    """Lightning's DeepSpeedStrategy needs CUDA: ZeRO-3 training with every callback on one GPU."""
    res = run_cli("fit", "--config", str(tiny_config(tmp_path, **{"probe": {"num_sequences": 8}})),
                  "--trainer.accelerator", "gpu", "--trainer.devices", "1", "--trainer.strategy", "deepspeed_stage_3",
                  "--trainer.precision", "bf16-mixed", "--run.report", "false",
                  "--trajectories.enabled", "true", "--trajectories.num_blocks", "4")
    assert res.returncode == 0, res.stderr[-3000:]
    table = store.read_table(store.table_path(Path(tmp_path) / "runs" / "tiny"))
    assert {"per", "cka_prev", "cka_final", "kl_uniform", "trajectory_val_ppl", "train_loss", "val_loss"} <= set(table.metric)
    # DeepSpeed clips and measures the gradient norm itself: the logged norm is its (finite, positive) one
    norms = table[table.metric == "grad_norm"].value
    assert len(norms) and np.isfinite(norms).all() and (norms > 0).all()
    from lmdynamics.trajectories.storage import TrajectoryStore

    traj = TrajectoryStore(Path(tmp_path) / "runs" / "tiny" / "trajectories" / "tiny").read()
    saved = sorted(int(p.name[4:]) for p in (Path(tmp_path) / "runs" / "tiny" / "checkpoints").iterdir())
    assert list(traj.steps) == saved and np.isfinite(traj.losses).all()
