"""Checkpoint sources (hub revisions, local run directories), step presets and tensor-by-tensor streaming."""

from lmdynamics.checkpoints.sources import Checkpoint, HubSource, RunSource, add_to_hf_cache, open_source
from lmdynamics.checkpoints.steps import (
    EVERY_10K_STEPS,
    PAPER_STEPS,
    PRESETS,
    PYTHIA_STEPS,
    PYTHIA_TOKENS_PER_STEP,
    parse_steps,
    select_steps,
)
from lmdynamics.checkpoints.streaming import (
    CheckpointError,
    CorruptCheckpointError,
    check_weight_files,
    iter_tensors,
    tensor_shapes,
    weight_files,
)

__all__ = [
    "EVERY_10K_STEPS",
    "PAPER_STEPS",
    "PRESETS",
    "PYTHIA_STEPS",
    "PYTHIA_TOKENS_PER_STEP",
    "Checkpoint",
    "CheckpointError",
    "CorruptCheckpointError",
    "HubSource",
    "RunSource",
    "add_to_hf_cache",
    "check_weight_files",
    "iter_tensors",
    "open_source",
    "parse_steps",
    "select_steps",
    "tensor_shapes",
    "weight_files",
]
