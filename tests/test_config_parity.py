"""Every configs/train/pythia-*.yaml reproduces the published architecture and recipe (SCIENCE.md section 1)."""

from pathlib import Path

import pytest
import torch
import yaml
from transformers import GPTNeoXForCausalLM

from lmdynamics.callbacks.schedule import pythia_schedule
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


def load(size):
    return yaml.safe_load((CONFIGS / f"pythia-{size}.yaml").read_text())


@pytest.mark.parametrize("size", list(PUBLISHED))
def test_architecture_and_recipe(size):
    layers, d, heads, d_head, lr, vocab = PUBLISHED[size]
    cfg = load(size)
    spec = ModelSpec(**cfg["model"]["model"])
    hf = spec.to_hf_config()
    assert (hf.num_hidden_layers, hf.hidden_size, hf.num_attention_heads, hf.vocab_size) == (layers, d, heads, vocab)
    assert hf.hidden_size // hf.num_attention_heads == d_head
    assert hf.intermediate_size == 4 * d
    assert hf.rope_parameters["partial_rotary_factor"] == 0.25 and hf.rope_parameters["rope_theta"] == 10000.0
    assert hf.use_parallel_residual and not hf.tie_word_embeddings
    assert hf.hidden_act == "gelu" and hf.max_position_embeddings == 2048
    assert hf.attention_dropout == 0.0 and hf.hidden_dropout == 0.0
    optim = cfg["model"]["optim"]
    assert optim["lr"] == lr and tuple(optim["betas"]) == (0.9, 0.95) and optim["eps"] == 1e-8
    assert optim["weight_decay"] == 0.1 and optim["warmup_fraction"] == 0.01 and optim["min_lr_ratio"] == 0.1
    assert cfg["trainer"]["gradient_clip_val"] == 1.0 and cfg["trainer"]["max_steps"] == 143000
    assert cfg["data"]["context_length"] == 2048 and cfg["data"]["global_batch_size"] == 1024
    assert cfg["checkpoints"] == {"every": 1000, "log_cap": 512}


@pytest.mark.parametrize("size", list(PUBLISHED))
def test_parameter_count_matches_formula(size):
    spec = ModelSpec(**load(size)["model"]["model"]).resolved()
    with torch.device("meta"):
        model = GPTNeoXForCausalLM(spec.to_hf_config())
    assert count_parameters(model) == pythia_parameter_count(spec.num_layers, spec.hidden_size, spec.vocab_size)


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
    from lmdynamics.training.cli import main

    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(CONFIGS / f"pythia-{size}.yaml"), "--print_config"])
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["model"]["size"] == size and printed["data"]["streaming"] is True
    assert printed["convergence"]["enabled"] and printed["weight_rank"]["enabled"] and printed["head_rank"]["enabled"]
