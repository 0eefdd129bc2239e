"""End-to-end training through the real CLI: checkpoints, logs, exact resume, round trip and bad input."""

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import yaml
from transformers import AutoTokenizer, GPTNeoXForCausalLM

from lmdynamics.training.cli import main
from tests.helpers.cli import losses, run_cli, tiny_config


@pytest.mark.slow
def test_fit_writes_loadable_checkpoints_logs_and_config(tmp_path):
    cfg = tiny_config(tmp_path)
    res = run_cli("fit", "--config", str(cfg))
    assert res.returncode == 0, res.stderr[-2000:]
    run = tmp_path / "runs" / "tiny"
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["step00000000", "step00000001", "step00000002", "step00000003", "step00000006"]
    assert not list(run.rglob(".*tmp*"))
    for name in names:
        model = GPTNeoXForCausalLM.from_pretrained(run / "checkpoints" / name)
        assert model.config.num_hidden_layers == 2
    tok = AutoTokenizer.from_pretrained(run / "checkpoints" / names[-1])
    assert tok.eos_token_id == 0
    info = json.loads((run / "run.json").read_text())
    assert info["tokens_per_step"] == 4 * 32 and info["max_steps"] == 6
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["model"]["hidden_size"] == 32 and saved["data"]["batch_size"] == 4
    metrics = pd.read_csv(run / "csv" / "metrics.csv")
    for col in ("train_loss", "lr", "grad_norm", "tokens", "tokens_per_sec", "val_loss", "val_ppl"):
        assert col in metrics and metrics[col].notna().any(), col
    val = metrics.dropna(subset=["val_loss"])
    assert (val["val_ppl"] - val["val_loss"].map(lambda v: float(torch.exp(torch.tensor(v))))).abs().max() < 1e-3
    assert metrics["tokens"].dropna().max() == 6 * 4 * 32
    res = run_cli("validate", "--config", str(cfg), "--ckpt_path", str(run / "lightning" / "last.ckpt"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "val_loss" in res.stdout


@pytest.mark.slow
def test_resume_after_kill_reproduces_every_loss(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    rec = "tests.helpers.callbacks.LossRecorder"
    res = run_cli("fit", "--config", str(tiny_config(a)), "--trainer.callbacks+=" + rec,
                  "--trainer.callbacks.path", str(a / "loss.jsonl"))
    assert res.returncode == 0, res.stderr[-2000:]
    cfg_b = tiny_config(b)
    killed = run_cli("fit", "--config", str(cfg_b), "--trainer.callbacks+=" + rec,
                     "--trainer.callbacks.path", str(b / "loss.jsonl"),
                     "--trainer.callbacks+=tests.helpers.callbacks.KillAtStep", "--trainer.callbacks.step", "4")
    assert killed.returncode == 137
    assert sorted(losses(b / "loss.jsonl")) == [1, 2, 3, 4]
    assert {1, 2, 3} <= set(table_losses(b))  # the tidy table holds every row up to the checkpoint (step 3)
    resumed = run_cli("fit", "--config", str(cfg_b), "--ckpt_path", "last", "--trainer.callbacks+=" + rec,
                      "--trainer.callbacks.path", str(b / "loss.jsonl"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    full, parts = losses(a / "loss.jsonl"), losses(b / "loss.jsonl")  # step 4 is re-run after the resume
    assert sorted(full) == sorted(parts) == [1, 2, 3, 4, 5, 6]
    assert parts == full  # bit-identical per-step losses, data order included
    assert table_losses(b) == table_losses(a) and sorted(table_losses(a)) == [1, 2, 3, 4, 5, 6]


def table_losses(tmp: Path) -> dict[int, float]:
    from lmdynamics import store

    table = store.read_table(store.table_path(tmp / "runs" / "tiny"))
    rows = table[table.metric == "train_loss"]
    return dict(zip(rows.step.tolist(), rows.value.tolist()))


def test_save_and_from_pretrained_give_identical_logits(tmp_path):
    from lightning import Trainer

    from lmdynamics.callbacks.hf_checkpoints import HFCheckpoints
    from lmdynamics.data.datamodule import TextDataModule
    from lmdynamics.models.zoo import ModelSpec
    from lmdynamics.training.module import LMModule

    dm = TextDataModule(tokenizer="bpe:512", context_length=32, batch_size=4, max_documents=300,
                        cache_dir=str(tmp_path.parent / "lmd-cache"))
    module = LMModule(ModelSpec(num_layers=2, hidden_size=32, num_heads=4, context_length=32))
    trainer = Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
                      callbacks=[HFCheckpoints(every=2, log_cap=0)], default_root_dir=str(tmp_path),
                      limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    loaded = GPTNeoXForCausalLM.from_pretrained(tmp_path / "checkpoints" / "step00000002").eval()
    module.model.eval()
    x = dm.val_blocks_tensor[:3]
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=x).logits, module.model(input_ids=x).logits)
    step0 = GPTNeoXForCausalLM.from_pretrained(tmp_path / "checkpoints" / "step00000000")
    assert not torch.equal(step0.gpt_neox.embed_in.weight, loaded.gpt_neox.embed_in.weight)


@pytest.mark.parametrize(
    "over, extra, words",
    [
        ({"model.model.num_layers": None}, ["--model.model.size", "99m"], "unknown Pythia size"),
        ({}, ["--model.model.hiden_size", "3"], "hiden_size"),
        ({}, ["--data.source", "/no/such/file.txt"], "does not exist"),
        ({}, ["--data.context_length", "64", "--model.model.max_position_embeddings", "32"], "exceeds the model's maximum"),
        ({}, ["--data.global_batch_size", "10"], "not a multiple"),
        ({}, ["--checkpoints.every", "0"], "checkpoints.every"),
        ({}, ["--ckpt_path", "last"], "no resume checkpoint"),
    ],
)
def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, capsys, over, extra, words):
    cfg = tiny_config(tmp_path, **over)
    code = main(["fit", "--config", str(cfg), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert words in err[-1] and err[-1].startswith("error: ")
    assert not (tmp_path / "runs" / "tiny").exists()


def test_malformed_yaml_and_empty_corpus(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  model:\n    num_layers: [\n")
    assert main(["fit", "--config", str(tiny_config(tmp_path)), "--config", str(bad)]) == 2
    assert "error: " in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert main(["fit", "--config", str(tiny_config(tmp_path)), "--data.source", str(empty)]) == 2
    assert "is empty" in capsys.readouterr().err.strip().splitlines()[-1]


def test_existing_run_directory_is_refused_not_overwritten(tmp_path, capsys):
    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    (run / "precious.txt").write_text("keep")
    assert main(["fit", "--config", str(tiny_config(tmp_path))]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (run / "precious.txt").read_text() == "keep" and sorted(p.name for p in run.iterdir()) == ["precious.txt"]


def test_non_finite_loss_stops_with_step_and_last_checkpoint(tmp_path, capsys):
    cfg = tiny_config(tmp_path, **{"model.optim.lr": float("inf")})
    assert main(["fit", "--config", str(cfg)]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "non-finite training loss" in line and "at step 1" in line and "step00000001" in line
    ckpts = tmp_path / "runs" / "tiny" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step00000000", "step00000001"]  # complete, no temporaries


def test_tidy_table_logger_writes_a_part_every_flush_every_steps_and_at_checkpoints(tmp_path):
    """Lightning calls save() after every log_metrics: the rows still go out in a few parts, none lost."""
    from lmdynamics import store
    from lmdynamics.callbacks.table_logger import TidyTableLogger

    trainer = SimpleNamespace(global_step=0)
    module = SimpleNamespace(_trainer=trainer, tokens_per_step=10, spec=SimpleNamespace(name="tiny"))
    logger = TidyTableLogger(tmp_path / "run", module, flush_every=5)
    table = store.table_path(tmp_path / "run")
    for step in range(1, 13):
        trainer.global_step = step
        logger.log_metrics({"train_loss": float(step), "lr": 0.1}, step=step - 1)
        logger.save()
        assert len(store.parts(table)) == step // 5
    assert logger.checkpoint_state() == {"step": 12}  # a checkpoint at step 12: rows 11-12 written first
    assert len(store.parts(table)) == 3
    logger.finalize("success")
    rows = store.read_table(table)
    assert len(store.parts(table)) == 3 and len(rows) == 24
    assert sorted(rows[rows.metric == "train_loss"].step) == list(range(1, 13))
    assert set(rows.tokens) == {10 * s for s in range(1, 13)}
