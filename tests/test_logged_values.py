"""Every per-step value the loggers write is the quantity its name says, recomputed independently.

Row ``step`` k describes update k (the k-th optimizer step): ``train_loss`` the mean next-token loss over
update k's whole global batch (every micro-batch of every rank), ``lr`` the rate update k used, ``grad_norm``
the global gradient norm before clipping, ``tokens`` the tokens consumed by updates 1..k. Each is recomputed
here from the HF checkpoint written after update k - 1 and the token ids the run recorded, with transformers'
own ``labels=`` loss: one device, gradient accumulation, 2-process DDP, and DDP with accumulation.
"""

import math

import pandas as pd
import pytest
import torch
from transformers import GPTNeoXForCausalLM

from lmdynamics import store
from tests.helpers.cli import run_cli, tiny_config
from tests.helpers.recorders import read_micro_batches
from tests.test_distributed import free_port

STEPS, WARMUP, PEAK, MIN_RATIO = 6, 3, 0.003, 0.1


def published_lr(k: int) -> float:
    """Linear warmup to the peak at update WARMUP, cosine to MIN_RATIO x peak at update STEPS."""
    if k <= WARMUP:
        return PEAK * k / WARMUP
    return PEAK * (MIN_RATIO + (1 - MIN_RATIO) * 0.5 * (1 + math.cos(math.pi * (k - WARMUP) / (STEPS - WARMUP))))


SETTINGS = {
    "one-device": dict(batch=4, global_batch=None, devices=1),
    "accumulation": dict(batch=2, global_batch=8, devices=1),
    "ddp": dict(batch=2, global_batch=4, devices=2),
    "ddp-accumulation": dict(batch=2, global_batch=8, devices=2),
}


def train(tmp_path, batch, global_batch, devices):
    cfg = tiny_config(tmp_path, **{"trainer.max_steps": STEPS, "model.optim.warmup_fraction": WARMUP / STEPS,
                                   "model.optim.lr": PEAK, "checkpoints": {"every": 1, "log_cap": None},
                                   "convergence": {"enabled": False}, "weight_rank": {"enabled": False},
                                   "head_rank": {"enabled": False}})
    args = ["fit", "--config", str(cfg), "--data.batch_size", str(batch), "--run.report", "false",
            "--trainer.callbacks+=tests.helpers.recorders.MicroBatchRecorder",
            "--trainer.callbacks.path", str(tmp_path / "batches.jsonl")]
    if global_batch:
        args += ["--data.global_batch_size", str(global_batch)]
    env = None
    if devices > 1:
        args += ["--trainer.devices", str(devices), "--trainer.strategy", "ddp"]
        env = {"MASTER_PORT": str(free_port())}
    res = run_cli(*args, env_extra=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return tmp_path / "runs" / "tiny"


@pytest.mark.slow
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_logged_step_values_equal_an_independent_recomputation(tmp_path, setting):
    s = SETTINGS[setting]
    run = train(tmp_path, **s)
    csv = pd.read_csv(run / "csv" / "metrics.csv")
    table = store.read_table(store.table_path(run))
    batches = read_micro_batches(tmp_path / "batches.jsonl")
    global_blocks = s["global_batch"] or s["batch"] * s["devices"]
    assert sorted(batches) == list(range(1, STEPS + 1))

    def logged(name):
        rows = csv.dropna(subset=[name])
        from_csv = dict(zip(rows["step"].astype(int), rows[name]))
        rows = table[table.metric == name]
        from_table = dict(zip(rows.step, rows.value))
        assert sorted(from_table) == list(range(1, STEPS + 1)), name
        assert from_csv == pytest.approx(from_table, rel=1e-6), name
        return from_table

    loss, lr, grad_norm, tokens = logged("train_loss"), logged("lr"), logged("grad_norm"), logged("tokens")
    for k in range(1, STEPS + 1):
        ids = torch.tensor([block for micro in batches[k] for block in micro])  # the whole global batch
        assert ids.shape == (global_blocks, 32)
        model = GPTNeoXForCausalLM.from_pretrained(run / "checkpoints" / f"step{k - 1:08d}").train()
        out = model(input_ids=ids, labels=ids)  # transformers shifts the labels itself
        out.loss.backward()
        norm = torch.sqrt(sum(p.grad.double().pow(2).sum() for p in model.parameters()))
        assert loss[k] == pytest.approx(out.loss.item(), rel=1e-5, abs=1e-6), f"train_loss at update {k}"
        assert grad_norm[k] == pytest.approx(norm.item(), rel=1e-4), f"grad_norm at update {k}"
        assert lr[k] == pytest.approx(published_lr(k), rel=1e-6), f"lr at update {k}"
        assert tokens[k] == k * global_blocks * 32

    # Adam's first update moves each parameter by the learning rate times g / (|g| + eps), i.e. by the rate
    # itself wherever |g| >> eps; biases and norms have no weight decay.
    before = GPTNeoXForCausalLM.from_pretrained(run / "checkpoints" / "step00000000").state_dict()
    after = GPTNeoXForCausalLM.from_pretrained(run / "checkpoints" / "step00000001").state_dict()
    moved = max((after[n] - before[n]).abs().max().item() for n in before if n.endswith(".bias"))
    assert moved == pytest.approx(lr[1], rel=1e-3) and lr[1] != pytest.approx(lr[2], rel=1e-3)


def test_warmup_shorter_than_one_update_is_reported_and_kept(tmp_path, capsys):
    from lmdynamics.commands.fit import main

    cfg = tiny_config(tmp_path, **{"trainer.max_steps": 2, "checkpoints": {"every": 2, "log_cap": None},
                                   "convergence": {"enabled": False}, "weight_rank": {"enabled": False},
                                   "head_rank": {"enabled": False}})
    assert main(["fit", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "linear warmup over 1 update(s) (0.01 of 2 steps = 0.02, rounded)" in out
    rows = store.read_table(store.table_path(tmp_path / "runs" / "tiny"))
    lr = dict(zip(rows[rows.metric == "lr"].step, rows[rows.metric == "lr"].value))
    assert lr[1] == pytest.approx(0.003) and lr[2] == pytest.approx(0.003 * 0.1)  # warmup 1 update, then the end


def test_validation_values_carry_their_update_in_every_log(tmp_path):
    """val_loss / val_ppl after update k carry step k in the CSV, TensorBoard and the table alike (as the
    train values and the checkpoints do), so the logs line up without reading the table."""
    from lmdynamics.commands.fit import main
    from tests.kill_resume import _tensorboard_scalars

    cfg = tiny_config(tmp_path, **{"checkpoints": {"every": 3, "log_cap": None}, "convergence": {"enabled": False},
                                   "weight_rank": {"enabled": False}, "head_rank": {"enabled": False},
                                   "run.loggers": ["csv", "tensorboard"], "run.report": False})
    assert main(["fit", "--config", str(cfg)]) == 0  # 6 steps, validation every 3
    run = tmp_path / "runs" / "tiny"
    table = store.read_table(store.table_path(run))
    csv = pd.read_csv(run / "csv" / "metrics.csv")
    scalars = _tensorboard_scalars(run)
    for name in ("val_loss", "val_ppl"):
        in_table = dict(zip(table[table.metric == name].step, table[table.metric == name].value))
        assert sorted(in_table) == [3, 6], name
        rows = csv.dropna(subset=[name])
        assert dict(zip(rows.step.astype(int), rows[name])) == pytest.approx(in_table, rel=1e-6), name
        assert dict(scalars[name]) == pytest.approx(in_table, rel=1e-6), name
