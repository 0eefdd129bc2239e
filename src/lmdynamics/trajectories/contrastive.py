"""Contrastive decoding between a small and a large model (Xia et al. 2023, sec. 5): "p_small - p_large" text.

At every step the next token is drawn from
    p'(v) = (max(w_s p_s(v) + w_l p_l(v), 0) + floor) / Z,
with weights in [-1, 1] and ``floor`` = 1e-7 added to every token (the authors' code: logits' = log(max(...,
0) + 1e-7), then softmax). The floor keeps p' a distribution when the mixture is <= 0 everywhere (then p' is
uniform) and gives each token at most floor x V of extra mass (0.005 for a 50k vocabulary). Greedy takes the
argmax of p'; nucleus sampling keeps the smallest set of tokens whose p' reaches ``top_p``. Both models keep a
key/value cache (the authors recomputed the whole prefix at every step). The mixture is formed in float64.
Generation of a prompt ends when the end-of-text token is chosen (kept as the last generated token, so the
text's perplexity counts the model's choice to stop) or after ``max_new_tokens`` tokens, whichever comes first.
"""

from __future__ import annotations

import torch

__all__ = ["FLOOR", "contrastive_next", "contrastive_generate", "check_weights"]

FLOOR = 1e-7


def check_weights(w_small: float, w_large: float) -> None:
    for name, w in (("small", w_small), ("large", w_large)):
        if not -1.0 <= w <= 1.0:
            raise ValueError(f"the {name} model's weight {w} is outside [-1, 1]; give weights like 1,-1")
    if w_small == 0 and w_large == 0:
        raise ValueError("both weights are 0: p' would be uniform; give at least one non-zero weight")


def contrastive_next(p_small: torch.Tensor, p_large: torch.Tensor, w_small: float, w_large: float,
                     floor: float = FLOOR) -> torch.Tensor:
    """p' over the vocabulary from the two models' next-token distributions (V,) (float64)."""
    q = torch.clamp(w_small * p_small.double() + w_large * p_large.double(), min=0.0) + floor
    return q / q.sum()


def _nucleus(q: torch.Tensor, top_p: float, generator) -> int:
    probs, order = torch.sort(q, descending=True)
    keep = int(torch.searchsorted(torch.cumsum(probs, 0), torch.tensor(top_p, dtype=probs.dtype)).item()) + 1
    probs = probs[:keep]
    return int(order[torch.multinomial(probs / probs.sum(), 1, generator=generator)].item())


class _Cached:
    """One model stepping through a sequence with its key/value cache."""

    def __init__(self, model):
        import inspect

        self.model, self.past = model, None
        self.device = next(model.parameters()).device
        # transformers 5.25 renamed past_key_values (deprecated, with a FutureWarning per call) to cache
        self.cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    @torch.no_grad()
    def feed(self, ids: list[int]) -> torch.Tensor:
        out = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True,
                         **{self.cache_name: self.past})
        self.past = getattr(out, self.cache_name)
        return torch.softmax(out.logits[0, -1].double(), -1).cpu()


def contrastive_generate(small, large, prompt_ids: list[int], w_small: float, w_large: float, max_new_tokens: int,
                         greedy: bool = False, top_p: float = 0.9, generator: torch.Generator | None = None,
                         floor: float = FLOOR, eos_id: int | None = None) -> dict:
    """New token ids and, per generated token, p_s and p_l of the chosen token; ``finished``: ``eos`` when
    ``eos_id`` was chosen (the last id then), ``length`` when ``max_new_tokens`` ran out first."""
    check_weights(w_small, w_large)
    if not prompt_ids:
        raise ValueError("empty prompt: give at least one token of context")
    if not greedy and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    small.eval()
    large.eval()
    a, b = _Cached(small), _Cached(large)
    p_s, p_l = a.feed(list(prompt_ids)), b.feed(list(prompt_ids))
    vocab = min(p_s.shape[0], p_l.shape[0])  # padded vocabularies may differ; ids past the shorter are never drawn
    out, chosen_s, chosen_l = [], [], []
    for _ in range(max_new_tokens):
        q = contrastive_next(p_s[:vocab], p_l[:vocab], w_small, w_large, floor)
        tok = int(torch.argmax(q).item()) if greedy else _nucleus(q, top_p, generator)
        out.append(tok)
        chosen_s.append(float(p_s[tok]))
        chosen_l.append(float(p_l[tok]))
        if tok == eos_id:
            return {"ids": out, "p_small": chosen_s, "p_large": chosen_l, "finished": "eos"}
        if len(out) < max_new_tokens:
            p_s, p_l = a.feed([tok]), b.feed([tok])
    return {"ids": out, "p_small": chosen_s, "p_large": chosen_l, "finished": "length"}
