"""The micro-batch size DeepSpeed's config needs, from the data module rather than from the train loader.

Lightning's DeepSpeedStrategy fills ``train_micro_batch_size_per_gpu`` (unless the config sets it) from
``train_dataloader.batch_sampler.batch_size``. None of this project's train loaders has one: the in-memory
blocks go through a rank-slicing batch sampler, the streaming and synthetic loaders yield whole batches
(``batch_sampler`` is None). Without this, every DeepSpeed fit stops at start with an AttributeError.
"""

from __future__ import annotations


def give_deepspeed_the_micro_batch(trainer) -> None:
    """Set the DeepSpeed config's ``train_micro_batch_size_per_gpu`` to the data module's ``batch_size`` (sequences
    per device per micro-batch), before the strategy formats its config; a value the config already holds stays."""
    from lightning.pytorch.strategies import DeepSpeedStrategy  # no deepspeed import: that happens at setup

    strategy, datamodule = trainer.strategy, getattr(trainer, "datamodule", None)
    if isinstance(strategy, DeepSpeedStrategy) and isinstance(strategy.config, dict) and datamodule is not None:
        strategy.config.setdefault("train_micro_batch_size_per_gpu", int(datamodule.batch_size))
