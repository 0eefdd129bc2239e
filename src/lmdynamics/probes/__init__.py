"""Probe sets and probe capture: one forward pass, hooks on every layer, activations keyed (layer, component).

Shared by the live callbacks and the offline analysis, so both see the very same numbers.
"""

from lmdynamics.probes.activations import (
    ActivationFile,
    activation_key,
    load_activations,
    open_activations,
    parse_activation_key,
    save_activations,
)
from lmdynamics.probes.capture import ALL_COMPONENTS, Activations, capture, find_gpt_neox
from lmdynamics.probes.probeset import ProbeSet
from lmdynamics.probes.sources import (
    PROBE_FILE,
    load_tokenizer,
    pack_texts,
    probe_from_source,
    read_hub_texts,
    read_texts,
    tokenizer_fingerprint,
)

__all__ = [
    "ALL_COMPONENTS",
    "PROBE_FILE",
    "ActivationFile",
    "Activations",
    "ProbeSet",
    "activation_key",
    "capture",
    "find_gpt_neox",
    "load_activations",
    "load_tokenizer",
    "open_activations",
    "pack_texts",
    "parse_activation_key",
    "probe_from_source",
    "read_hub_texts",
    "read_texts",
    "save_activations",
    "tokenizer_fingerprint",
]
