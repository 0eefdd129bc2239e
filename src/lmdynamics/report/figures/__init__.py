"""Figures from the tidy table: one function per figure, each writing one PNG and returning its path.

Every function reads only the tidy table (see ``lmdynamics.store``), draws with matplotlib's Agg canvas
(no pyplot, no global state), writes the PNG atomically (a hidden temporary file in the same directory,
then ``os.replace``) and returns the path. When the table lacks the rows a figure needs, the function
draws nothing and returns None; the reason is logged and passed to ``on_skip(reason)`` if given.

Which rows each figure needs (layer -1 = model level):
- ``plot_loss``: metrics val_loss / loss / probe_loss / train_loss at layer -1, component "model" (its title
  names the ones drawn).
- ``plot_training_health``: metrics lr and grad_norm at layer -1, component "model" (logged by training runs).
- ``plot_cka_lines``, ``plot_cka_heatmap``, ``plot_cka_box``, ``plot_convergence_fraction``: ``metric``
  (default "cka_final" = biased linear CKA; "cka_final_debiased" = unbiased HSIC) at layers >= 0.
- ``plot_per_over_steps``, ``plot_per_by_layer``: metric "per" on weight matrices (qkv, dense, mlp_in,
  mlp_out, ov_headNN averaged into "ov"); embed_in / head at layer -1 are drawn too when present.
- ``plot_per_vs_convergence``: both of the above.
- ``plot_head_spectrum``: metric "sv_norm" of component "head" at layer -1 (singular value position in ``index``)
  and/or metric "kl_uniform" of component "head" at layer -1; ``plot_kl_uniform``: the latter.
- ``plot_anisotropy_over_steps``: metric "anisotropy" of "final" (layer -1), else of the deepest "resid".
- ``plot_anisotropy_by_layer``: metric "anisotropy" at layers >= 0.
"""

from lmdynamics.report.figures.common import DPI, SkipFigure, cka_label, cka_norm, fmt_count, save, slug
from lmdynamics.report.figures.cka import plot_cka_box, plot_cka_heatmap, plot_cka_lines, plot_convergence_fraction
from lmdynamics.report.figures.head import (
    plot_anisotropy_by_layer,
    plot_anisotropy_over_steps,
    plot_head_spectrum,
    plot_kl_uniform,
)
from lmdynamics.report.figures.loss import LOSS_STYLE, loss_caption, plot_loss, plot_training_health, training_health_caption
from lmdynamics.report.figures.rank import plot_per_by_layer, plot_per_over_steps, plot_per_vs_convergence, plot_rank_by_layer, plot_rank_over_steps

__all__ = [
    "DPI", "LOSS_STYLE", "SkipFigure", "cka_label", "cka_norm", "fmt_count", "loss_caption", "plot_anisotropy_by_layer",
    "plot_anisotropy_over_steps", "plot_cka_box", "plot_cka_heatmap", "plot_cka_lines", "plot_convergence_fraction",
    "plot_head_spectrum", "plot_kl_uniform", "plot_loss", "plot_per_by_layer", "plot_per_over_steps",
    "plot_per_vs_convergence", "plot_rank_by_layer", "plot_rank_over_steps", "plot_training_health", "save", "slug",
    "training_health_caption",
]
