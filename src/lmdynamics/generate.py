"""``lmdynamics generate``: text from a checkpoint, to see that a trained model works.

    lmdynamics generate --checkpoint runs/demo --prompt "The list" --max_new_tokens 40 \
        --temperature 0.8 --top_p 0.9 --seed 0

``--checkpoint``: a Hugging Face checkpoint directory (``runs/demo/checkpoints/step00000600``), a run directory
(its last checkpoint) or ``SOURCE@STEP`` (``runs/demo@300``). The model is loaded with
``lmdynamics.models.heads.load_causal_lm`` (plain, tied, low-rank and mixture-of-softmaxes heads) and the
tokenizer from the checkpoint's ``tokenizer.json``. Sampling is transformers' ``generate`` with
``do_sample``: logits divided by the temperature, then nucleus (top-p) filtering; ``--temperature 0`` is greedy
decoding (the argmax token at every step). Ids the tokenizer does not have (a vocabulary padded to a multiple
of 128) are never produced. Generation stops after ``--max_new_tokens`` tokens or at the end-of-text token.
The same seed gives the same text on the same machine. Bad input: one line on stderr, exit 2. The command: ``lmdynamics.commands.generate``.
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["generate", "resolve"]


def resolve(spec: str) -> Path:
    """The checkpoint directory of a checkpoint directory, a run directory (its last checkpoint) or SOURCE@STEP."""
    from .checkpoints import CheckpointError, RunSource
    from .trajectories.contrastive_run import resolve_checkpoint

    path = Path(spec)
    if path.is_dir() and not (path / "config.json").is_file() and (path / "run.json").is_file():
        run = RunSource(path)
        return run.checkpoint(run.available_steps()[-1]).path
    if not path.exists() and "@" not in spec:
        raise CheckpointError(f"--checkpoint {spec}: no such directory; give a checkpoint directory, a run directory "
                              f"(runs/demo, after make train) or SOURCE@STEP (runs/demo@600)")
    return resolve_checkpoint(spec)


def generate(model, tokenizer, prompt: str, max_new_tokens: int = 40, temperature: float = 0.8, top_p: float = 0.9,
             seed: int = 0, num_samples: int = 1) -> list[list[int]]:
    """The new token ids of ``num_samples`` continuations of ``prompt`` (see the module docstring)."""
    if max_new_tokens <= 0:
        raise ValueError(f"--max_new_tokens must be positive, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"--temperature must be >= 0 (0 = greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"--top_p must be in (0, 1], got {top_p}")
    if num_samples <= 0:
        raise ValueError(f"--num_samples must be positive, got {num_samples}")
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"--prompt {prompt!r} has no tokens; give some text to continue")
    context = model.config.max_position_embeddings
    if len(ids) + max_new_tokens > context:
        raise ValueError(f"the prompt ({len(ids)} tokens) + {max_new_tokens} new tokens exceed the model's context of "
                         f"{context}; shorten the prompt or lower --max_new_tokens")
    vocab = len(tokenizer)
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else model.generation_config.eos_token_id
    settings = {"do_sample": temperature > 0, "max_new_tokens": max_new_tokens, "use_cache": True,
                "pad_token_id": eos if eos is not None else 0, "eos_token_id": eos,
                "suppress_tokens": list(range(vocab, model.config.vocab_size)) or None}
    if temperature > 0:
        settings.update(temperature=temperature, top_p=top_p, top_k=0)
    else:  # greedy: no sampling settings at all (the checkpoint's generation config may carry some)
        settings.update(temperature=None, top_p=None, top_k=None)
    torch.manual_seed(seed)
    out = []
    with torch.no_grad():
        for _ in range(num_samples):
            seq = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 **settings)[0, len(ids):].tolist()
            if eos is not None and eos in seq:  # stop at (and keep) the end-of-text token
                seq = seq[: seq.index(eos) + 1]
            out.append(seq)
    return out
