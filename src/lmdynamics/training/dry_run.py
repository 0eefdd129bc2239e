"""``--run.dry_run true``: what a config builds, on the meta device (nothing trained or written)."""

from __future__ import annotations

from pathlib import Path

from ..callbacks.hf_checkpoints import run_description
from .module import step_tokens


def plan(module, trainer, datamodule, run_dir: Path) -> dict:
    """The architecture, optimiser, schedule and batch this config resolves to."""
    import torch

    module.trainer = trainer
    with torch.device("meta"):
        module.configure_model()
    optimizer = module.configure_optimizers()["optimizer"]
    hf = module.model.config
    return {
        "run_directory": str(Path(run_dir).absolute()),
        "model": module.spec.name,
        "built": {"num_layers": hf.num_hidden_layers, "hidden_size": hf.hidden_size,
                  "num_heads": hf.num_attention_heads, "vocab_size": hf.vocab_size,
                  "intermediate_size": hf.intermediate_size,
                  "rotary_pct": hf.rope_parameters["partial_rotary_factor"],
                  "rotary_base": hf.rope_parameters["rope_theta"], "parallel_residual": hf.use_parallel_residual,
                  "tied_head": hf.tie_word_embeddings, "max_position_embeddings": hf.max_position_embeddings},
        "adamw": {**{k: optimizer.defaults[k] for k in ("lr", "betas", "eps")},
                  "weight_decay_per_group": [g["weight_decay"] for g in optimizer.param_groups]},
        "tokens_per_step": step_tokens(datamodule, trainer),
        **run_description(trainer, module),
    }
