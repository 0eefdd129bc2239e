"""Output-head variants: the interventions against the softmax bottleneck, as a switch on the model.

``model.model.head: {kind: plain | low_rank | mos, rank, components}`` with ``model.model.tie_embeddings``:

- ``plain``: GPT-NeoX's linear head, logits = h W^T (W: V x d); tied to the input embedding or not.
- ``low_rank``: W = A B (A: V x r, B: r x d), logits of rank <= r: the negative control (docs/science.md
  section 3, the rank-constrained head). Saved merged (W = A B) in plain GPT-NeoX form.
- ``mos``: a mixture of K softmaxes (Yang et al. 2018, "Breaking the softmax bottleneck"): gate
  pi = softmax(G h), per component h_k = tanh(P_k h) and log p = log sum_k pi_k softmax(W_k h_k). The log of
  a mixture is not low-rank in h, so it escapes the rank <= d + 1 limit. Yang et al. share one output
  matrix across components; here each component has its own W_k (V x d), so that each component's head is
  a matrix whose spectrum the head measures apply to. Its "logits" are log-probabilities (cross-entropy on
  them is the mixture's negative log-likelihood). Not GPT-NeoX form: the checkpoint carries a model card
  saying so and loads through ``load_causal_lm``. With ``rank: r`` each component's matrix is low-rank,
  W_k = A_k B_k (A_k: V x r, B_k: r x d): every component alone is bounded by rank r, the mixture is not
  (the test bed's "MoS at r = R/4" against the plain rank-r head).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from ..catalogue import head_component

HEAD_KINDS = ("plain", "low_rank", "mos")
CONFIG_KEY = "lmdynamics_head"  # the head spec inside a checkpoint's config.json (MoS checkpoints only)


@dataclass
class HeadSpec:
    """The output head.

    Args:
        kind: ``plain`` (linear, GPT-NeoX), ``low_rank`` (W = A B) or ``mos`` (mixture of softmaxes).
        rank: r of a low-rank head (1 <= r <= hidden size); for a mixture of softmaxes, optional: the rank of
            each component's matrix W_k = A_k B_k (empty: full V x d matrices).
        components: K of a mixture of softmaxes (>= 1).
    """

    kind: str = "plain"
    rank: int | None = None
    components: int = 4

    def check(self, hidden_size: int, tie_embeddings: bool) -> None:
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"model.model.head.kind {self.kind!r} is unknown; choose one of {', '.join(HEAD_KINDS)}")
        if self.kind == "low_rank" and (self.rank is None or not 1 <= self.rank <= hidden_size):
            raise ValueError(f"model.model.head.rank must be between 1 and the hidden size {hidden_size} for a low_rank head, got {self.rank}")
        if self.kind == "mos" and self.rank is not None and not 1 <= self.rank <= hidden_size:
            raise ValueError(f"model.model.head.rank of a mos head (each component's rank) must be empty or between 1 and the hidden size {hidden_size}, got {self.rank}")
        if self.kind == "mos" and self.components < 1:
            raise ValueError(f"model.model.head.components must be at least 1 for a mos head, got {self.components}")
        if tie_embeddings and self.kind != "plain":
            raise ValueError(f"model.model.tie_embeddings needs the plain head (a {self.kind} head has no V x d matrix to share); set tie_embeddings: false")

    @property
    def label(self) -> str:
        """Short name used in model names: ``low_rank8``, ``mos4``, ``mos4_rank8`` ("" for plain)."""
        mos = f"mos{self.components}" + (f"_rank{self.rank}" if self.rank is not None else "")
        return {"plain": "", "low_rank": f"low_rank{self.rank}", "mos": mos}[self.kind]


def as_head_spec(value) -> HeadSpec:
    """A HeadSpec from a HeadSpec, a dict or a jsonargparse Namespace."""
    if isinstance(value, HeadSpec):
        return value
    if value is None:
        return HeadSpec()
    items = dict(vars(value)) if not isinstance(value, dict) else dict(value)
    return HeadSpec(**{k: v for k, v in items.items() if not k.startswith("_")})


class LowRankHead(nn.Module):
    """logits = (h B^T) A^T, i.e. h W^T with W = A B (A: V x r, B: r x d); init so that W has the plain head's scale."""

    def __init__(self, hidden_size: int, vocab_size: int, rank: int, std: float = 0.02):
        super().__init__()
        self.in_features, self.out_features, self.rank = hidden_size, vocab_size, rank
        factor_std = math.sqrt(std / math.sqrt(rank))  # entries of A B then have standard deviation std
        self.A = nn.Parameter(torch.randn(vocab_size, rank) * factor_std)
        self.B = nn.Parameter(torch.randn(rank, hidden_size) * factor_std)

    def merged(self) -> torch.Tensor:
        return self.A @ self.B

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return (h @ self.B.T) @ self.A.T


class MixtureOfSoftmaxes(nn.Module):
    """log sum_k softmax(G h)_k softmax(W_k tanh(P_k h)) (Yang et al. 2018, eq. 4; per-component W_k, see module doc).
    ``rank``: each W_k = A_k B_k of rank ``rank`` (a ``LowRankHead``); None: full V x d matrices."""

    def __init__(self, hidden_size: int, vocab_size: int, components: int, std: float = 0.02, rank: int | None = None):
        super().__init__()
        self.in_features, self.out_features, self.components, self.rank = hidden_size, vocab_size, components, rank
        self.gate = nn.Linear(hidden_size, components, bias=False)
        self.proj = nn.Linear(hidden_size, components * hidden_size)
        if rank is None:
            self.heads = nn.ModuleList(nn.Linear(hidden_size, vocab_size, bias=False) for _ in range(components))
        else:
            self.heads = nn.ModuleList(LowRankHead(hidden_size, vocab_size, rank, std) for _ in range(components))
        for lin in (self.gate, self.proj, *(self.heads if rank is None else ())):
            nn.init.normal_(lin.weight, std=std)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        log_gate = torch.log_softmax(_at_least_fp32(self.gate(h)), dim=-1)  # [..., K]
        ctx = torch.tanh(self.proj(h)).unflatten(-1, (self.components, h.shape[-1]))  # [..., K, d]
        parts = [torch.log_softmax(_at_least_fp32(head(ctx[..., k, :])), dim=-1) + log_gate[..., k : k + 1]
                 for k, head in enumerate(self.heads)]
        return torch.logsumexp(torch.stack(parts, dim=-1), dim=-1)


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Softmax arithmetic in fp32 under bf16/fp16 training, in the input's precision otherwise."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class LowRankHeadLM(GPTNeoXForCausalLM):
    """GPT-NeoX with a low-rank head; ``save_pretrained`` writes plain GPT-NeoX (W = A B merged)."""

    def __init__(self, config: GPTNeoXConfig, rank: int):
        super().__init__(config)
        self.lm_head = LowRankHead(config.hidden_size, config.vocab_size, rank, config.initializer_range)

    def save_pretrained(self, save_directory, state_dict=None, **kwargs):
        state = dict(state_dict if state_dict is not None else self.state_dict())
        a, b = state.pop("lm_head.A"), state.pop("lm_head.B")
        state["lm_head.weight"] = (a.double() @ b.double()).to(a.dtype)
        plain = GPTNeoXForCausalLM._from_config(self.config)  # same config: the file is plain GPT-NeoX
        out = plain.save_pretrained(save_directory, state_dict=state, **kwargs)
        _write_card(save_directory, f"Output head: low-rank W = A B (rank {self.lm_head.rank}), saved merged as the "
                    "V x d matrix, so this is a plain GPT-NeoX checkpoint: `GPTNeoXForCausalLM.from_pretrained` loads it.")
        return out


class MoSHeadLM(GPTNeoXForCausalLM):
    """GPT-NeoX with a mixture-of-softmaxes head; its checkpoints load through this class (``load_causal_lm``)."""

    def __init__(self, config: GPTNeoXConfig, components: int | None = None, rank: int | None = None):
        super().__init__(config)
        if components is None:  # loading a checkpoint: the head spec is in its config
            saved = getattr(config, CONFIG_KEY)
            components, rank = int(saved["components"]), saved.get("rank")
        setattr(config, CONFIG_KEY, {"kind": "mos", "components": components, "rank": rank})
        self.lm_head = MixtureOfSoftmaxes(config.hidden_size, config.vocab_size, components, config.initializer_range, rank)

    def get_output_embeddings(self):
        return self.lm_head

    def save_pretrained(self, save_directory, *args, **kwargs):
        out = super().save_pretrained(save_directory, *args, **kwargs)
        rank = self.lm_head.rank
        matrix = ("`lm_head.heads.k.weight` (V x d)" if rank is None else
                  f"`lm_head.heads.k.A @ lm_head.heads.k.B` (V x {rank} times {rank} x d: each component has rank {rank})")
        _write_card(save_directory, f"Output head: a mixture of {self.lm_head.components} softmaxes (Yang et al. 2018), "
                    "NOT the GPT-NeoX linear head: `GPTNeoXForCausalLM.from_pretrained` would load the backbone and a "
                    "random `lm_head`. Load it with `lmdynamics.models.heads.load_causal_lm(path)`. Component k's head "
                    f"matrix is {matrix}.")
        return out


def _write_card(directory, text: str) -> None:
    from ..atomic import write_text_atomic

    write_text_atomic(Path(directory) / "README.md", f"# lmdynamics checkpoint\n\n{text}\n")


def build_causal_lm(config: GPTNeoXConfig, head: HeadSpec) -> GPTNeoXForCausalLM:
    """The GPT-NeoX model with the requested head (``config.tie_word_embeddings`` ties a plain head)."""
    if head.kind == "low_rank":
        return LowRankHeadLM(config, head.rank)
    if head.kind == "mos":
        return MoSHeadLM(config, head.components, head.rank)
    return GPTNeoXForCausalLM(config)


def load_causal_lm(path, revision: str | None = None, **kwargs) -> GPTNeoXForCausalLM:
    """Load any checkpoint: a directory written here (plain, tied, merged low-rank GPT-NeoX, or a mixture of
    softmaxes) or a hub repo at ``revision``. Every command that builds a model from a checkpoint loads it here."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    local = Path(path) / "config.json"
    if local.is_file():
        config = json.loads(local.read_text())
    else:
        from transformers import AutoConfig

        # the config from where the weights come: the same revision and cache (from_pretrained's cache_dir)
        config = AutoConfig.from_pretrained(str(path), revision=revision, cache_dir=kwargs.get("cache_dir")).to_dict()
    cls = MoSHeadLM if (config.get(CONFIG_KEY) or {}).get("kind") == "mos" else GPTNeoXForCausalLM
    try:
        return cls.from_pretrained(str(path), revision=revision, **kwargs)
    except Exception as err:
        if type(err).__name__ != "SafetensorError":  # a truncated file or a garbled header: one line for people
            raise
        from ..checkpoints.streaming import CorruptCheckpointError

        problem = "is a truncated or corrupt safetensors file"
        if local.is_file():  # a run's own checkpoint: nothing to download it from again
            raise CorruptCheckpointError(f"{Path(path) / 'model.safetensors'} {problem} ({err})", "restore the checkpoint "
                                         "from a backup, write it again, or pick another checkpoint") from None
        raise CorruptCheckpointError(f"{path}@{revision or 'main'} {problem} ({err})") from None


def head_matrices(model: nn.Module, fetch: Callable[[str], torch.Tensor] | None = None) -> list[tuple[str, torch.Tensor]]:
    """``(component, V x d matrix)`` of every head the model has: ``head`` for a plain (also tied) or low-rank
    head (its W = A B), ``head_c00``, ``head_c01``, ... for each mixture component.

    ``fetch(name)`` returns a full parameter by name (e.g. gathered under ZeRO-3); default: the parameter itself.
    """
    params = dict(model.named_parameters())
    fetch = fetch or (lambda name: params[name].detach())
    head = model.get_output_embeddings()
    prefix = next(n for n, m in model.named_modules() if m is head)
    if isinstance(head, LowRankHead):
        return [("head", fetch(f"{prefix}.A").double() @ fetch(f"{prefix}.B").double())]
    if isinstance(head, MixtureOfSoftmaxes) and head.rank is not None:
        return [(head_component(k), fetch(f"{prefix}.heads.{k}.A").double() @ fetch(f"{prefix}.heads.{k}.B").double())
                for k in range(head.components)]
    if isinstance(head, MixtureOfSoftmaxes):
        return [(head_component(k), fetch(f"{prefix}.heads.{k}.weight")) for k in range(head.components)]
    name = next(n for n, p in model.named_parameters() if p is head.weight)  # tied: the input embedding's name
    return [(head_component(), fetch(name))]
