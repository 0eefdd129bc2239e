"""Synthetic GPT-NeoX checkpoints in Hugging Face format, for tests, benchmarks and trying the analysis.

``write_synthetic_run`` writes a run directory in the layout of a training run (run.json, checkpoints/stepN)
whose weights move linearly from a random start to a random end over the steps, so every analysis has
something to show (CKA to the final step rises to 1). Nothing here is trained.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import torch

from lmdynamics.layout import RunLayout


def tiny_config(**overrides):
    """A small GPTNeoXConfig (Pythia's architecture: rotary 25%, parallel residual, untied head)."""
    from transformers import GPTNeoXConfig

    kwargs = dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                  max_position_embeddings=64, rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False)
    kwargs.update(overrides)
    return GPTNeoXConfig(**kwargs)


def write_checkpoint(model, directory: str | os.PathLike, tokenizer_file: str | os.PathLike | None = None) -> Path:
    """``save_pretrained`` (safetensors) plus an optional tokenizer.json copied beside it."""
    directory = Path(directory)
    model.save_pretrained(directory)
    if tokenizer_file is not None:
        (directory / "tokenizer.json").write_bytes(Path(tokenizer_file).read_bytes())
    return directory


def write_synthetic_run(
    run_dir: str | os.PathLike,
    steps: Iterable[int],
    config=None,
    tokenizer_file: str | os.PathLike | None = None,
    run: str = "synthetic",
    model_name: str = "tiny",
    tokens_per_step: int = 1024,
    seed: int = 0,
) -> Path:
    """A run directory with one checkpoint per step, weights interpolated from a random start to a random end."""
    from transformers import GPTNeoXForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    layout = RunLayout(run_dir)
    steps = sorted({int(s) for s in steps})
    config = config or tiny_config()
    torch.manual_seed(seed)
    start = GPTNeoXForCausalLM(config).state_dict()
    torch.manual_seed(seed + 1)
    end = GPTNeoXForCausalLM(config).state_dict()
    model = GPTNeoXForCausalLM(config)
    last = max(steps[-1], 1)
    for step in steps:
        t = step / last
        with torch.no_grad():
            model.load_state_dict({k: (1 - t) * start[k] + t * end[k] for k in start})
        write_checkpoint(model, layout.checkpoint_dir(step), tokenizer_file)
    meta = {"run": run, "model": model_name, "max_steps": last, "tokens_per_step": tokens_per_step, "seed": seed}
    layout.run_json.write_text(json.dumps(meta))
    return layout.root
