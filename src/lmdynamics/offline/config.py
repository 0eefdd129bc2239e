"""The offline analysis configuration: the dataclasses below, read by jsonargparse (as training's config) from
``--config`` YAML files and ``--key value`` flags (``lmdynamics.commands.analyze``), then checked by :func:`validate`.

Every default is visible here and in ``configs/analysis/*.yaml``; the resolved configuration is saved as
``<out>/config.yaml`` with every analysis. Knobs shared with the live measurements have the same names:
``components`` (training: ``probe.components``), ``debiased`` (``convergence.debiased``), ``spectrum``
(``head_rank.spectrum``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lmdynamics.catalogue import ACTIVATION_COMPONENTS as ALL_COMPONENTS
from lmdynamics.catalogue import ANALYSES

# What an analysis can compute per (model, step) (lmdynamics.catalogue.ANALYSES). ``weights``: the
# catalogue's spectrum measurements of every weight matrix, OV per head, the head's spectrum (streamed, no
# model built). ``activations``: one forward pass over the probe (cached), anisotropy per (layer,
# component), probe loss. ``cka_final`` / ``cka_prev`` / ``cka_ref``: CKA to the final checkpoint / the
# previous analysed step / a chosen reference, from cached activations only.
SPECTRUM = ("all", "checkpoints", "none")
DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class ProbeConfig:
    """Where the probe sequences come from and their shape (defaults mirror the paper: 128 x last token).

    Args:
        source: local .txt/.jsonl/.parquet, hub dataset ("name" or "name:config"), run dir or probe file.
        num_sequences: number of probe sequences.
        positions: "last" (the last token of each sequence) or P positions sampled per sequence.
        context_length: tokens per probe sequence.
        seed: seed of the sequence and position sampling.
        split: split of a hub dataset; default validation, else test, else train.
        text_field: the text column of a dataset or .jsonl/.parquet file.
        tokenizer: tokenizer.json; default the tokenizer stored with the first model's checkpoint.
    """

    source: str | None = None
    num_sequences: int = 128
    positions: str | int = "last"
    context_length: int = 2048
    seed: int = 0
    split: str | None = None
    text_field: str = "text"
    tokenizer: str | None = None


@dataclass
class AnalysisConfig:
    """One offline analysis: which checkpoints, what to compute, where to write.

    Args:
        models: hub repo ids (revisions stepN) or run directories; "a,b" too.
        steps: a preset (paper, pythia-all, every-10k, all) or a list of steps.
        out: output directory (metrics.parquet/, config.yaml, report/).
        analyses: what to compute per checkpoint: weights, activations, cka_final, cka_prev, cka_ref.
        reference: the cka_ref reference: a step of the same model, or "MODEL@stepN" (hub id or run dir).
        final_step: the CKA-to-final reference step; default 143000 for hub models, the last saved step of a run.
        probe: the probe sequences (probe.* options).
        components: activation components to capture (ov, ov_head, attn, mlp, resid, final).
        spectrum: the head's whole normalised spectrum: all (every analysed checkpoint) or none.
        debiased: also store the unbiased-HSIC CKA (metric names end in _debiased).
        probe_loss: also store the probe's next-token loss per checkpoint.
        batch_size: probe sequences per forward pass.
        dtype: dtype of the model for the forward pass (float32, float16, bfloat16).
        activations_dtype: dtype of the cached probe activations.
        activations_cache: default <out>/activations; share it between outputs to reuse forward passes.
        tokens_per_step: tokens per step of hub models; default Pythia's 2,097,152.
        accelerator: Lightning Fabric accelerator (auto, cpu, gpu).
        devices: devices per node (one process each).
        num_nodes: nodes.
        report: write figures and a report from the table at the end.
    """

    models: list[str] | str = field(default_factory=list)
    steps: str | list[int] = "paper"
    out: str = "analysis_out/default"
    analyses: list[str] | str = field(default_factory=lambda: ["weights", "activations", "cka_final", "cka_prev"])
    reference: str | int | None = None
    final_step: int | None = None
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    components: list[str] | str = field(default_factory=lambda: list(ALL_COMPONENTS))
    spectrum: str | bool = "all"
    debiased: bool = False
    probe_loss: bool = True
    batch_size: int = 16
    dtype: str = "float32"
    activations_dtype: str = "float16"
    activations_cache: str | None = None
    tokens_per_step: int | None = None
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    report: bool = True

    @property
    def cache_dir(self) -> Path:
        return Path(self.activations_cache) if self.activations_cache else Path(self.out) / "activations"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _split(value) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def validate(config: AnalysisConfig) -> AnalysisConfig:
    """Normalise and check every field; one clear line per problem."""
    config.models = _split(config.models or [])
    if not config.models:
        raise ValueError("no models to analyse; set models in the config or pass --models ORG/NAME,RUN_DIR")
    from lmdynamics.checkpoints.steps import parse_steps  # here: the checkpoints package imports torch

    config.steps = parse_steps(config.steps)
    config.analyses = _split(config.analyses)
    bad = sorted(set(config.analyses) - set(ANALYSES))
    if bad:
        raise ValueError(f"unknown analyses {bad}; choose from {list(ANALYSES)}")
    if "cka_ref" in config.analyses and config.reference is None:
        raise ValueError("analysis cka_ref needs reference: a step (e.g. 13000) or MODEL@stepN")
    config.components = _split(config.components)
    bad = sorted(set(config.components) - set(ALL_COMPONENTS))
    if bad:
        raise ValueError(f"unknown components {bad}; choose from {list(ALL_COMPONENTS)}")
    for name in ("dtype", "activations_dtype"):
        if getattr(config, name) not in DTYPES:
            raise ValueError(f"{name} must be one of {list(DTYPES)}, got {getattr(config, name)!r}")
    for name in ("batch_size", "devices", "num_nodes"):
        if int(getattr(config, name)) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
        setattr(config, name, int(getattr(config, name)))
    p = config.probe
    if isinstance(p.positions, str) and p.positions != "last":
        try:
            p.positions = int(p.positions)
        except ValueError:
            raise ValueError(f"probe.positions must be 'last' or an int, got {p.positions!r}") from None
    if p.num_sequences < 1 or p.context_length < 1:
        raise ValueError("probe.num_sequences and probe.context_length must be >= 1")
    if isinstance(config.spectrum, bool):  # true / false read as all / none
        config.spectrum = "all" if config.spectrum else "none"
    if config.spectrum not in SPECTRUM:
        raise ValueError(f"spectrum must be one of {list(SPECTRUM)}, got {config.spectrum!r}")
    config.out = str(config.out)
    return config


def dump_config(config: AnalysisConfig) -> str:
    """The resolved config as YAML (what ``<out>/config.yaml`` holds)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
