"""Every configs/train/pythia-*.yaml reproduces the published architecture and recipe (docs/science.md sec. 1)."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import GPTNeoXForCausalLM

from lmdynamics.checkpoints.steps import pythia_schedule
from lmdynamics.models.zoo import ModelSpec, count_parameters, pythia_parameter_count

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "train"

# The published table, typed in from the Pythia paper (layers, d_model, heads, d_head, peak LR, padded vocab).
PUBLISHED = {
    "14m": (6, 128, 4, 32, 1e-3, 50304),
    "31m": (6, 256, 8, 32, 1e-3, 50304),
    "70m": (6, 512, 8, 64, 1e-3, 50304),
    "160m": (12, 768, 12, 64, 6e-4, 50304),
    "410m": (24, 1024, 16, 64, 3e-4, 50304),
    "1b": (16, 2048, 8, 256, 3e-4, 50304),
    "1.4b": (24, 2048, 16, 128, 2e-4, 50304),
    "2.8b": (32, 2560, 32, 80, 1.6e-4, 50304),
    "6.9b": (32, 4096, 32, 128, 1.2e-4, 50432),
    "12b": (36, 5120, 40, 128, 1.2e-4, 50688),
}


def dry_run(config_args, local_text, tokenizer, *extra):
    """The real CLI (`make train CONFIG=...` with its defaults), local data instead of the Pile, stopped before fit."""
    from lmdynamics.training.cli import build_cli

    return build_cli(["fit", *config_args, "--data.source", str(local_text), "--data.tokenizer", str(tokenizer),
                      "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.precision", "32-true",
                      "--run.dry_run", "true", *extra])


def built_model(cli):
    """The GPTNeoXForCausalLM the CLI's module builds (on the meta device in a dry run)."""
    model = cli.model.model
    assert isinstance(model, GPTNeoXForCausalLM)
    return model


def assert_published_architecture(model, layers, d, heads, vocab):
    hf = model.config
    assert (hf.num_hidden_layers, hf.hidden_size, hf.num_attention_heads, hf.vocab_size) == (layers, d, heads, vocab)
    assert len(model.gpt_neox.layers) == layers and model.gpt_neox.embed_in.weight.shape == (vocab, d)
    assert model.embed_out.weight.shape == (vocab, d) if hasattr(model, "embed_out") else model.lm_head.weight.shape == (vocab, d)
    assert hf.intermediate_size == 4 * d and model.gpt_neox.layers[0].mlp.dense_h_to_4h.weight.shape == (4 * d, d)
    assert hf.rope_parameters["partial_rotary_factor"] == 0.25 and hf.rope_parameters["rope_theta"] == 10000.0
    assert hf.use_parallel_residual and not hf.tie_word_embeddings
    assert hf.hidden_act == "gelu" and hf.max_position_embeddings == 2048
    assert hf.attention_dropout == 0.0 and hf.hidden_dropout == 0.0


def published_count(layers, d, vocab):
    """Pythia's parameter count, written out here independently of the project: L(12d^2 + 13d) + 2Vd + 2d."""
    return layers * (12 * d * d + 13 * d) + 2 * vocab * d + 2 * d


@pytest.mark.parametrize("size", list(PUBLISHED))
def test_every_pythia_config_builds_the_published_model_through_the_cli(size, local_text, pythia_tokenizer_file):
    layers, d, heads, d_head, lr, vocab = PUBLISHED[size]
    cli = dry_run(["--config", str(CONFIGS / f"pythia-{size}.yaml")], local_text, pythia_tokenizer_file)
    model = built_model(cli)
    assert_published_architecture(model, layers, d, heads, vocab)
    assert d // heads == d_head
    n = sum(p.numel() for p in model.parameters())
    assert n == published_count(layers, d, vocab)
    assert cli.model.spec.name == f"pythia-{size}" and cli.model.spec.overrides() == {}

    # the optimiser and schedule this run would use: the published recipe
    conf = cli.model.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["eps"] == 1e-8
    names = {id(p): name for name, p in model.named_parameters()}
    decays = {names[id(p)]: g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert sorted(decays) == sorted(names.values())  # every parameter in exactly one group
    for name, wd in decays.items():
        is_matrix = name.endswith(".weight") and not any(k in name for k in ("layernorm", "final_layer_norm"))
        assert wd == (0.1 if is_matrix else 0.0), name
    peak = [g["initial_lr"] for g in opt.param_groups]
    assert peak == [lr, lr]
    mult = sched.lr_lambdas[0]  # LambdaLR gets the number of updates done: update k runs at mult(k - 1)
    assert mult(0) == pytest.approx(1 / 1430) and mult(1429) == pytest.approx(1.0)  # 1% of 143,000 updates
    assert mult(143000 - 1) == pytest.approx(0.1) and mult(1430 + (143000 - 1430) // 2 - 1) == pytest.approx(0.55, abs=1e-4)

    # trainer, data, checkpoints and probe resolved from the config, not from class defaults
    t = cli.trainer
    assert t.max_steps == 143000 and t.gradient_clip_val == 1.0 and t.accumulate_grad_batches == 1024 // 8
    assert cli.datamodule.context_length == 2048 and cli.datamodule.global_batch_size == 1024
    by_type = {type(c).__name__: c for c in t.callbacks}
    ckpt = by_type["HFCheckpoints"]
    assert (ckpt.every, ckpt.log_cap) == (1000, 512)
    assert len(pythia_schedule(t.max_steps, ckpt.every, ckpt.log_cap)) == 154
    assert (by_type["Probe"].num_sequences, by_type["Probe"].positions) == (128, "last")
    assert all(by_type[c].enabled for c in ("ActivationConvergence", "WeightRank", "HeadRank"))


def test_parameter_count_of_70m_is_the_published_number():
    assert pythia_parameter_count(6, 512, 50304) == 70_426_624


def test_checkpoint_schedule_is_pythias_154_revisions():
    steps = pythia_schedule(143000, every=1000, log_cap=512)
    assert len(steps) == 154
    assert steps[:11] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    assert steps[11:13] == [1000, 2000] and steps[-1] == 143000


def test_new_size_is_a_few_lines():
    spec = ModelSpec(num_layers=3, hidden_size=96, num_heads=3, vocab_size=1000).resolved()
    with torch.device("meta"):
        model = GPTNeoXForCausalLM(spec.to_hf_config())
    assert count_parameters(model) == pythia_parameter_count(3, 96, 1000)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"size": "99m"}, "unknown Pythia size"),
        ({"num_layers": 2, "hidden_size": 30, "num_heads": 4, "vocab_size": 10}, "not divisible"),
        ({"num_layers": 2, "hidden_size": 32, "num_heads": 4}, "lacks vocab_size"),
        ({"size": "14m", "context_length": 4096}, "exceeds the model's maximum"),
    ],
)
def test_bad_model_specs(kwargs, words):
    with pytest.raises(ValueError, match=words):
        ModelSpec(**kwargs).resolved()


@pytest.mark.parametrize("size", ["14m", "1b", "12b"])
def test_pythia_config_parses_through_the_real_cli(size, capsys):
    from lmdynamics.commands.fit import main

    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(CONFIGS / f"pythia-{size}.yaml"), "--print_config"])
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["model"]["size"] == size and printed["data"]["streaming"] is True
    assert printed["convergence"]["enabled"] and printed["weight_rank"]["enabled"] and printed["head_rank"]["enabled"]


def test_new_size_layered_over_the_demo_config_builds_that_size(local_text, pythia_tokenizer_file):
    cli = dry_run(["--config", str(CONFIGS / "demo.yaml"), "--config", str(CONFIGS / "new-size.yaml")],
                  local_text, pythia_tokenizer_file)
    model = built_model(cli)
    hf = model.config
    vocab = -(-50277 // 128) * 128  # the tokenizer's ids rounded up to a multiple of 128
    assert (hf.num_hidden_layers, hf.hidden_size, hf.num_attention_heads, hf.vocab_size) == (10, 384, 6, vocab)
    assert sum(p.numel() for p in model.parameters()) == published_count(10, 384, vocab)
    assert cli.model.spec.name == "neox-L10-d384-h6" and cli._run.name == "neox-L10-d384"


def test_named_size_with_a_field_overridden_says_so_everywhere(local_text, pythia_tokenizer_file, capsys):
    cli = dry_run(["--config", str(CONFIGS / "pythia-70m.yaml")], local_text, pythia_tokenizer_file,
                  "--model.model.num_layers", "3")
    out = capsys.readouterr().out
    model = built_model(cli)
    assert_published_architecture_but_layers = (model.config.hidden_size, model.config.num_attention_heads) == (512, 8)
    assert assert_published_architecture_but_layers and model.config.num_hidden_layers == 3
    assert sum(p.numel() for p in model.parameters()) == published_count(3, 512, 50304)
    assert cli.model.spec.name == "pythia-70m+num_layers=3" and cli._run.name == "pythia-70m+num_layers=3"
    assert "model pythia-70m with num_layers=3 (published 6): 3 layers" in out
    plan = json.loads(out[out.index("\n{") + 1:])
    assert plan["overrides"] == {"num_layers": 3} and plan["published_parameters"] == published_count(6, 512, 50304)
    assert plan["parameters"] == published_count(3, 512, 50304)


def test_explicit_fields_equal_to_the_published_size_are_no_override(local_text, pythia_tokenizer_file):
    cli = dry_run(["--config", str(CONFIGS / "pythia-14m.yaml")], local_text, pythia_tokenizer_file,
                  "--model.model.num_layers", "6", "--model.model.hidden_size", "128")
    assert cli.model.spec.name == "pythia-14m" and cli.model.spec.overrides() == {}


def test_unknown_size_is_one_clear_line(local_text, pythia_tokenizer_file, capsys):
    from lmdynamics.commands.fit import main

    code = main(["fit", "--config", str(CONFIGS / "pythia-14m.yaml"), "--model.model.size", "15m",
                 "--data.source", str(local_text), "--data.tokenizer", str(pythia_tokenizer_file), "--run.dry_run", "true"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: unknown Pythia size '15m'") and "70m" in err[-1]


@pytest.mark.slow
def test_pythia_config_trains_the_published_model(tmp_path, local_text, pythia_tokenizer_file):
    """The issue's command: a Pythia config through the real CLI writes a checkpoint of the published size."""
    from tests.helpers.cli import run_cli

    res = run_cli("fit", "--config", str(CONFIGS / "pythia-14m.yaml"), "--run.root", str(tmp_path), "--run.name", "t1",
                  "--data.source", str(local_text), "--data.tokenizer", str(pythia_tokenizer_file),
                  "--trainer.max_steps", "2", "--data.batch_size", "1", "--data.global_batch_size", "1",
                  "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.precision", "32-true",
                  "--data.val_documents", "300", "--probe.num_sequences", "4", "--run.loggers", "[csv]",
                  "--run.report", "false")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "model pythia-14m: 6 layers, d_model 128, 4 heads, vocab 50304" in res.stdout
    run = tmp_path / "t1"
    cfg = json.loads((run / "checkpoints" / "step00000002" / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"], cfg["vocab_size"]) == (6, 128, 4, 50304)
    info = json.loads((run / "run.json").read_text())
    assert info["model"] == "pythia-14m" and info["overrides"] == {}
    assert info["parameters"] == info["published_parameters"] == published_count(6, 128, 50304)
    assert info["optimizer"]["lr"] == 1e-3 and info["schedule"]["warmup_steps"] == 1
