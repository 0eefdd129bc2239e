"""Per-token losses of a causal language model on fixed evaluation blocks (Xia et al. 2023, sec. 2).

``token_losses`` is pure: a model and token blocks in, one loss per (context, token) pair out. Live
(``callbacks.trajectories``) and offline (``trajectories.offline``) recording both call it, so the same
weights give the same numbers either way.
"""

from __future__ import annotations

import math

import torch

__all__ = ["token_losses", "corpus_perplexity"]


@torch.no_grad()
def token_losses(model: torch.nn.Module, blocks: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """Next-token cross-entropy (nats, float32) of every token after the first of each block.

    blocks: (N, T) token ids -> losses (N, T - 1): ``losses[n, t]`` is -log p(blocks[n, t + 1] | blocks[n, :t + 1]).
    The model is put in eval mode for the call and restored afterwards.
    """
    if blocks.ndim != 2 or blocks.shape[1] < 2:
        raise ValueError(f"token_losses: blocks must be (N, T) with T >= 2, got shape {tuple(blocks.shape)}")
    if batch_size <= 0:
        raise ValueError(f"token_losses: batch_size must be positive, got {batch_size}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for i in range(0, blocks.shape[0], batch_size):
            ids = blocks[i: i + batch_size].to(device)
            logits = model(input_ids=ids).logits[:, :-1].float()
            target = ids[:, 1:]
            lse = torch.logsumexp(logits, dim=-1)
            out.append((lse - logits.gather(-1, target.unsqueeze(-1)).squeeze(-1)).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def corpus_perplexity(losses) -> float:
    """Token-weighted perplexity of a set of token losses: exp(mean loss), never a mean of perplexities."""
    t = torch.as_tensor(losses, dtype=torch.float64)
    if t.numel() == 0:
        raise ValueError("corpus_perplexity: no tokens")
    return math.exp(float(t.mean()))
