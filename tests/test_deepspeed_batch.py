"""DeepSpeed's micro-batch size comes from the data module: Lightning's own guess reads the train loader's
batch sampler, which none of this project's loaders has (every DeepSpeed fit stopped at start on a GPU)."""

import json
from types import SimpleNamespace

import pytest

from lmdynamics.data.datamodule import TextDataModule
from lmdynamics.models.zoo import ModelSpec
from lmdynamics.training.module import LMModule, OptimSpec


def strategy_at_setup(dm: TextDataModule, config: dict | None = None):
    """A real DeepSpeedStrategy whose trainer holds ``dm`` and its real train loader, after the module's setup
    hook ran (what Lightning does before the strategy formats its config)."""
    pytest.importorskip("deepspeed")
    from lightning.pytorch.strategies import DeepSpeedStrategy

    strategy = DeepSpeedStrategy(stage=3) if config is None else DeepSpeedStrategy(config=config)
    loader = dm.train_dataloader()
    source = SimpleNamespace(is_defined=lambda: True, dataloader=lambda: loader)
    trainer = SimpleNamespace(strategy=strategy, datamodule=dm, accumulate_grad_batches=2, gradient_clip_val=1.0,
                              fit_loop=SimpleNamespace(_data_source=source))
    module = LMModule(model=ModelSpec(num_layers=1, hidden_size=16, num_heads=2), optim=OptimSpec(lr=1e-3))
    module._trainer = trainer
    strategy._lightning_module = module
    module.setup("fit")
    strategy._format_batch_size_and_grad_accum_config()
    return strategy


def test_deepspeed_micro_batch_is_the_data_modules_batch_size(tmp_path):
    dm = TextDataModule(source="python-docs", tokenizer="bpe:300", context_length=16, batch_size=3, max_documents=60,
                        val_blocks=8, cache_dir=str(tmp_path))
    dm.prepare()
    strategy = strategy_at_setup(dm)
    assert strategy.config["train_micro_batch_size_per_gpu"] == 3
    assert strategy.config["gradient_accumulation_steps"] == 2


def test_deepspeed_micro_batch_of_a_streamed_corpus(tmp_path, pythia_tokenizer_file):
    """The streaming loader yields whole batches (no batch sampler at all)."""
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"Document {i}: " + "words and more words " * (1 + i % 4)})
                              for i in range(40)))
    dm = TextDataModule(source=str(path), tokenizer=str(pythia_tokenizer_file), context_length=16, batch_size=3,
                        streaming=True, val_documents=5, val_blocks=None, cache_dir=str(tmp_path / "cache"))
    dm.prepare()
    strategy = strategy_at_setup(dm)
    assert strategy.config["train_micro_batch_size_per_gpu"] == 3


def test_a_micro_batch_the_deepspeed_config_sets_stays(tmp_path):
    dm = TextDataModule(source="python-docs", tokenizer="bpe:300", context_length=16, batch_size=3, max_documents=60,
                        val_blocks=8, cache_dir=str(tmp_path))
    dm.prepare()
    strategy = strategy_at_setup(dm, {"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 5})
    assert strategy.config["train_micro_batch_size_per_gpu"] == 5
