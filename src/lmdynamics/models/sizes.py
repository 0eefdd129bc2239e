"""The Pythia size table and parameter count: plain numbers, importable without torch or transformers.

Numbers from the Pythia paper and the suite's own configs (Biderman et al., 2023; see docs/science.md sec. 1).
"""

from __future__ import annotations

from dataclasses import dataclass

PYTHIA_TOKENIZER_VOCAB = 50277  # ids the GPT-NeoX-20B tokenizer can emit


@dataclass(frozen=True)
class PythiaSize:
    layers: int
    d_model: int
    heads: int
    peak_lr: float
    vocab: int = 50304


# size -> (layers, d_model, heads, peak LR, padded vocab); d_head = d_model / heads.
PYTHIA_SIZES: dict[str, PythiaSize] = {
    "14m": PythiaSize(6, 128, 4, 1e-3),
    "31m": PythiaSize(6, 256, 8, 1e-3),
    "70m": PythiaSize(6, 512, 8, 1e-3),
    "160m": PythiaSize(12, 768, 12, 6e-4),
    "410m": PythiaSize(24, 1024, 16, 3e-4),
    "1b": PythiaSize(16, 2048, 8, 3e-4),
    "1.4b": PythiaSize(24, 2048, 16, 2e-4),
    "2.8b": PythiaSize(32, 2560, 32, 1.6e-4),
    "6.9b": PythiaSize(32, 4096, 32, 1.2e-4, vocab=50432),
    "12b": PythiaSize(36, 5120, 40, 1.2e-4, vocab=50688),
}


def pythia_parameter_count(num_layers: int, d_model: int, vocab: int) -> int:
    """L(12d^2 + 13d) + 2Vd + 2d: Pythia's parameter count with untied embeddings (docs/science.md sec. 1)."""
    return num_layers * (12 * d_model**2 + 13 * d_model) + 2 * vocab * d_model + 2 * d_model


def matmul_parameters(parameters: int, vocab: int, d_model: int, tied: bool = False) -> int:
    """N of 6 N T: the parameters that take part in matrix products, i.e. all but the input embedding (a
    lookup). The output head is a product and counts, also when it is the input embedding's tensor (tied: then
    ``parameters`` holds that tensor once, for the lookup and the product)."""
    return parameters if tied else parameters - vocab * d_model
