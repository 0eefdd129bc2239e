"""Live per-token trajectories: at the checkpoint schedule, one forward pass over the validation blocks
records every (context, token) loss of the first ``num_blocks`` blocks into the run's trajectory store
(``<run>/trajectories/<run name>/``, the format of ``lmdynamics.trajectories.storage``) together with the
validation perplexity of that same pass (token-weighted over all validation blocks the validation loop uses).
The offline recorder (``lmdynamics trajectories record``) writes the same store from the saved checkpoints
with the same function (``trajectories.record.token_losses``).

What this relies on from ``MeasurementCallback`` (callbacks/base.py): ``__init__(every, log_cap, enabled)``,
the schedule it builds in ``setup``, ``measure(trainer, pl_module, step) -> rows | None`` called on every
rank at each scheduled step, and ``record`` of the returned rows. From the module and data: ``pl_module.model``
(a GPTNeoXForCausalLM), ``pl_module.tokens_per_step``, ``trainer.datamodule.val_blocks_tensor``,
``.eos_id`` and ``.tokenizer``. Under DDP and ZeRO-1/2 every rank holds the full model and rank 0 alone
computes. Under ZeRO-3 each layer's forward gathers that layer's shards from every rank (a collective), so every
rank runs the same forward passes over the same blocks and rank 0 alone writes the store and the row.
"""

from __future__ import annotations

from ..trajectories.record import corpus_perplexity, token_losses
from ..trajectories.storage import TrajectoryStore, model_dir_name
from ..trajectories.tokens import packed_token_table
from ..distributed import is_zero3_param
from ..layout import RunLayout, tokens_at
from .base import MeasurementCallback

TRAJECTORY_VAL_PPL = "trajectory_val_ppl"  # validation perplexity of the pass that recorded the trajectories


class TrajectoryRecorder(MeasurementCallback):
    """Per-token losses of the first ``num_blocks`` validation blocks at every scheduled step.

    Args:
        num_blocks: validation blocks whose tokens are stored (each gives context_length - 1 values).
        batch_size: blocks per forward pass.
        every, log_cap, enabled: the measurement schedule (empty: the checkpoint steps); off by default.
    """

    def __init__(self, num_blocks: int = 16, batch_size: int = 8, every: int | None = None, log_cap: int | None = None,
                 enabled: bool = False):
        super().__init__(every=every, log_cap=log_cap, enabled=enabled)
        if num_blocks <= 0 or batch_size <= 0:
            raise ValueError(f"trajectories.num_blocks and batch_size must be positive, got {num_blocks} and {batch_size}")
        self.num_blocks, self.batch_size = num_blocks, batch_size
        self.store: TrajectoryStore | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit" or not self.enabled:
            return
        val = trainer.datamodule.val_blocks_tensor
        if self.num_blocks > len(val):
            raise ValueError(f"trajectories.num_blocks {self.num_blocks} exceeds the {len(val)} validation blocks; "
                             f"lower it or raise data.val_blocks / data.val_fraction")

    def _open_store(self, trainer, pl_module) -> TrajectoryStore:
        from ..probes.sources import tokenizer_fingerprint
        from ..trajectories.offline import non_embedding_parameters

        dm = trainer.datamodule
        blocks = dm.val_blocks_tensor[: self.num_blocks]
        table = packed_token_table(blocks, dm.eos_id)
        t = blocks.shape[1]
        layout = RunLayout(trainer.default_root_dir)
        root = layout.root
        meta = {"model": root.name, "source": str(root), "parameters": non_embedding_parameters(pl_module.model),
                "tokens_per_step": int(pl_module.tokens_per_step), "tokenizer": tokenizer_fingerprint(dm.tokenizer),
                "text": "validation split", "block_tokens": int(t), "val_ppl_on": "validation blocks", "recorded": "live"}
        return TrajectoryStore.create(layout.trajectories / model_dir_name(root.name), table, meta, blocks.numpy())

    def measure(self, trainer, pl_module, step: int) -> list[dict] | None:
        sharded = any(is_zero3_param(p) for p in pl_module.model.parameters())
        if not (trainer.is_global_zero or sharded):
            return None
        if self.store is None and trainer.is_global_zero:
            self.store = self._open_store(trainer, pl_module)
        losses = token_losses(pl_module.model, trainer.datamodule.val_blocks_tensor, self.batch_size)
        if not trainer.is_global_zero:
            return None  # this rank's passes served ZeRO-3's gathers
        ppl = corpus_perplexity(losses)
        self.store.append(step, losses[: self.num_blocks].reshape(-1).numpy(), ppl, tokens_at(step, pl_module.tokens_per_step))
        return [{"layer": -1, "component": "trajectories", "metric": TRAJECTORY_VAL_PPL, "value": ppl}]
