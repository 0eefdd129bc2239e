"""Pure tensor metrics of training dynamics (formulas and sources: ../shared/SCIENCE.md).

No files, no Lightning, no globals: live callbacks and offline runners call these same functions.
"""

from .anisotropy import anisotropy
from .cka import MinibatchCKA, StreamingLinearCKA, linear_cka
from .ov import (
    HeadParams,
    OVCircuits,
    ov_activations,
    ov_circuits,
    ov_gradient,
    ov_singular_values,
    split_dense,
    split_qkv,
)
from .spectrum import (
    condition_number,
    effective_rank,
    product_singular_values,
    proportional_effective_rank,
    singular_entropy_kl_uniform,
    singular_values,
    stable_rank,
    w_error,
)
from .trends import TREND_LABELS, TrendClassification, classify_trend, classify_trends, double_descent

__all__ = [
    "linear_cka",
    "StreamingLinearCKA",
    "MinibatchCKA",
    "singular_values",
    "product_singular_values",
    "effective_rank",
    "proportional_effective_rank",
    "stable_rank",
    "condition_number",
    "singular_entropy_kl_uniform",
    "w_error",
    "anisotropy",
    "split_qkv",
    "split_dense",
    "ov_circuits",
    "ov_activations",
    "ov_singular_values",
    "ov_gradient",
    "HeadParams",
    "OVCircuits",
    "classify_trend",
    "classify_trends",
    "double_descent",
    "TrendClassification",
    "TREND_LABELS",
]
