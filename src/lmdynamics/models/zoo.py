"""Pythia sizes (the table in ``sizes.py``) and custom sizes, turned into GPTNeoXConfig.

Numbers from the Pythia paper and the suite's own configs (Biderman et al., 2023; see docs/science.md sec. 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from transformers import GPTNeoXConfig

from .heads import HeadSpec, as_head_spec
from .sizes import PYTHIA_SIZES, PYTHIA_TOKENIZER_VOCAB, PythiaSize, pythia_parameter_count  # noqa: F401

# The architecture every Pythia size shares (docs/science.md sec. 1), as ModelSpec fields.
PYTHIA_ARCHITECTURE = {"intermediate_multiple": 4, "rotary_pct": 0.25, "rotary_base": 10000.0,
                       "parallel_residual": True, "tie_embeddings": False}


def pythia_size(size: str) -> PythiaSize:
    """The published numbers of a Pythia size, or one clear error naming the known sizes."""
    if size not in PYTHIA_SIZES:
        known = ", ".join(PYTHIA_SIZES)
        raise ValueError(f"unknown Pythia size {size!r}; choose one of {known}, or give num_layers/hidden_size/num_heads for a new size")
    return PYTHIA_SIZES[size]


@dataclass
class ModelSpec:
    """A GPT-NeoX architecture: a Pythia size by name, or a new size given by its numbers.

    ``size`` (e.g. "70m") fills every field left empty from the Pythia table. A field given explicitly
    beside a size overrides it, and says so: the model is then named ``pythia-70m+num_layers=4`` (see
    ``overrides``), never plain ``pythia-70m``.
    Everything else is the shared Pythia architecture: rotary on 25% of each head's dims (base 10000),
    parallel residual, untied head, LayerNorm, GELU, MLP width 4d, no dropout.
    ``head`` swaps the output head (``lmdynamics.models.heads``: plain, low_rank, mos); a non-plain head and
    tied embeddings of a custom size are named in the model name (``neox-L2-d16-h2+mos4``, ``+tied``).
    """

    size: str | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    num_heads: int | None = None
    vocab_size: int | None = None
    context_length: int = 2048
    max_position_embeddings: int | None = None  # None: 2048 for Pythia sizes, else context_length
    intermediate_multiple: int = 4
    rotary_pct: float = 0.25
    rotary_base: float = 10000.0
    parallel_residual: bool = True
    tie_embeddings: bool = False
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    head: HeadSpec = field(default_factory=HeadSpec)

    def resolved(self) -> ModelSpec:
        """A copy with every architecture field filled (from the Pythia table where a size is named)."""
        spec = self
        if self.size is not None:
            p = pythia_size(self.size)
            spec = replace(
                self,
                num_layers=p.layers if self.num_layers is None else self.num_layers,
                hidden_size=p.d_model if self.hidden_size is None else self.hidden_size,
                num_heads=p.heads if self.num_heads is None else self.num_heads,
                vocab_size=p.vocab if self.vocab_size is None else self.vocab_size,
            )
        missing = [f for f in ("num_layers", "hidden_size", "num_heads", "vocab_size") if getattr(spec, f) is None]
        if missing:
            raise ValueError(f"model spec lacks {', '.join(missing)}: name a Pythia size (model.size: 70m) or give them all")
        for f in ("num_layers", "hidden_size", "num_heads", "vocab_size", "context_length"):
            if getattr(spec, f) <= 0:
                raise ValueError(f"model.{f} must be positive, got {getattr(spec, f)}")
        if spec.hidden_size % spec.num_heads:
            raise ValueError(f"model.hidden_size {spec.hidden_size} is not divisible by model.num_heads {spec.num_heads}")
        max_pos = spec.max_position_embeddings or (2048 if spec.size else spec.context_length)
        if spec.context_length > max_pos:
            raise ValueError(f"context length {spec.context_length} exceeds the model's maximum {max_pos} (model.max_position_embeddings); lower data.context_length or raise the maximum")
        head = as_head_spec(spec.head)
        head.check(spec.hidden_size, spec.tie_embeddings)
        return replace(spec, max_position_embeddings=max_pos, head=head)

    def published(self) -> dict[str, object]:
        """The named Pythia size's published value of every architecture field ({} without a size)."""
        if self.size is None:
            return {}
        p = pythia_size(self.size)
        return {"num_layers": p.layers, "hidden_size": p.d_model, "num_heads": p.heads, "vocab_size": p.vocab,
                "max_position_embeddings": 2048, **PYTHIA_ARCHITECTURE}

    def overrides(self) -> dict[str, object]:
        """Architecture fields that differ from the published Pythia size this spec names ({} for none or no size).

        A named size with such fields is a documented override: the model's name carries them
        (``pythia-160m+num_layers=6``), the run's start line and ``run.json`` list them.
        """
        published = self.published()
        s = self.resolved() if published else self
        return {f: getattr(s, f) for f, v in published.items() if getattr(s, f) != v}

    @property
    def name(self) -> str:
        s = self.resolved()
        extra = [s.head.label] if s.head.label else []
        if self.size is None:
            tied = ["tied"] if s.tie_embeddings else []
            return "+".join([f"neox-L{s.num_layers}-d{s.hidden_size}-h{s.num_heads}", *tied, *extra])
        return "+".join([f"pythia-{self.size}", *(f"{k}={v}" for k, v in self.overrides().items()), *extra])

    def published_parameters(self) -> int | None:
        """The parameter count of the named Pythia size as published (None without a size)."""
        if self.size is None:
            return None
        p = pythia_size(self.size)
        return pythia_parameter_count(p.layers, p.d_model, p.vocab)

    def to_hf_config(self) -> GPTNeoXConfig:
        s = self.resolved()
        return GPTNeoXConfig(
            vocab_size=s.vocab_size,
            hidden_size=s.hidden_size,
            num_hidden_layers=s.num_layers,
            num_attention_heads=s.num_heads,
            intermediate_size=s.intermediate_multiple * s.hidden_size,
            hidden_act="gelu",
            rotary_pct=s.rotary_pct,
            rotary_emb_base=s.rotary_base,
            rope_parameters={"rope_type": "default", "rope_theta": s.rotary_base, "partial_rotary_factor": s.rotary_pct},
            attention_dropout=0.0,
            hidden_dropout=0.0,
            classifier_dropout=0.0,
            max_position_embeddings=s.max_position_embeddings,
            initializer_range=s.initializer_range,
            layer_norm_eps=s.layer_norm_eps,
            use_parallel_residual=s.parallel_residual,
            tie_word_embeddings=s.tie_embeddings,
            bos_token_id=0,
            eos_token_id=0,
            use_cache=False,
        )


def count_parameters(model) -> int:
    """Parameters of ``model``, also when DeepSpeed ZeRO-3 has sharded them (``ds_numel`` is the full size)."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
