"""End-to-end training through the real CLI: checkpoints, logs, round trip and bad input (resume: test_resume.py)."""

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import yaml
from transformers import AutoTokenizer, GPTNeoXForCausalLM

from lmdynamics.commands.fit import main
from tests.helpers.cli import run_cli, tiny_config


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
        ({}, ["--trainer.max_step", "2"], "--trainer.max_step"),  # a prefix of max_steps: refused, not guessed
        ({}, ["--ckpt_path", "/no/such.ckpt"], "does not exist"),
    ],
)
def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, capsys, over, extra, words):
    cfg = tiny_config(tmp_path, **over)
    code = main(["fit", "--config", str(cfg), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert words in err[-1] and err[-1].startswith("error: ")
    assert not (tmp_path / "runs" / "tiny").exists()


def test_only_implemented_subcommands_are_offered(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    listed = capsys.readouterr().out.split("Available subcommands:")[1]
    assert "fit" in listed and "validate" in listed and "test" not in listed and "predict" not in listed
    for sub in ("test", "predict"):
        assert main([sub, "--config", str(tiny_config(tmp_path))]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and sub in err[-1] and "fit" in err[-1]
    assert not (tmp_path / "runs").exists()


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
    assert "non-finite training loss" in line and "at step 2" in line and "step00000001" in line
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
        logger.log_metrics({"train_loss": float(step), "lr": 0.1}, step=step)  # the module logs at the update's step
        logger.save()
        assert len(store.parts(table)) == step // 5
    assert logger.checkpoint_state() == {"step": 12}  # a checkpoint at step 12: rows 11-12 written first
    assert len(store.parts(table)) == 3
    logger.finalize("success")
    rows = store.read_table(table)
    assert len(store.parts(table)) == 3 and len(rows) == 24
    assert sorted(rows[rows.metric == "train_loss"].step) == list(range(1, 13))
    assert set(rows.tokens) == {10 * s for s in range(1, 13)}


@pytest.mark.slow
def test_traceback_on_request(tmp_path):
    """A ValueError answers as bad input in one line (exit 2); LMDYNAMICS_TRACEBACK=1 shows where it came from
    instead, for the ValueErrors that are not the user's (one raised deep in a library during a fit)."""
    cfg = str(tiny_config(tmp_path))
    plain = run_cli("fit", "--config", cfg, "--run.resume_every", "0")
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines()[-1] == "error: run.resume_every must be a positive number of steps, got 0"
    shown = run_cli("fit", "--config", cfg, "--run.resume_every", "0", env_extra={"LMDYNAMICS_TRACEBACK": "1"})
    assert shown.returncode == 1 and "Traceback (most recent call last)" in shown.stderr
    assert "config_checks.py" in shown.stderr and not (tmp_path / "runs").exists()
