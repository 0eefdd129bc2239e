"""The measurement catalogue: every quantity the toolkit records, declared once.

An entry says what a metric is called in the tidy table, what it reads, which pure function of
``lmdynamics.metrics`` computes it, which components it applies to, how figures label it, and which
figure family draws it. The live callbacks and the offline runner compute from it (``lmdynamics.measure``),
the offline resume asks it what a step still lacks, and summaries, figures and the report take their
names and labels from it. Adding a metric is one pure function, one entry here and one test; its rows
appear live and offline, existing analyses fill it in on their next run, an entry with ``figures=True``
gets the figures of its family (:data:`FAMILIES`) in every run report, and an entry with ``compare`` set
gets a curve over tokens, one line per run, in every comparison (``lmdynamics compare``).

What a measurement reads (``reads``):
- ``spectrum``: the singular values of one weight matrix (or gradient): scalar functions of them;
- ``activations``: one set of probe activations of a (layer, component);
- ``activation_pair``: two sets of probe activations of the same probe rows (a step and its reference);
- ``scalar``: a value the training loop, the probe pass or a summary computes (losses, rates, events).

The components: per layer the weight matrices ``qkv``, ``dense``, ``mlp_in``, ``mlp_out`` and one OV
circuit per head ``ov_headNN`` (:data:`LAYER_MATRICES`), model level ``embed_in`` and ``head``; probe
activations ``ov``, ``ov_head`` (each head's ``ov_headNN``), ``attn``, ``mlp``, ``resid`` and ``final``
(:data:`ACTIVATION_COMPONENTS`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, replace


class _MetricFunction:
    """A function of ``lmdynamics.metrics`` imported on its first call, so that reading the catalogue (names,
    labels, families: what compare, saturation and report need) does not import torch."""

    def __init__(self, module: str, name: str):
        self.module, self.__name__ = module, name

    def __call__(self, *args, **kwargs):
        return getattr(importlib.import_module(f"lmdynamics.metrics.{self.module}"), self.__name__)(*args, **kwargs)

    def __repr__(self) -> str:
        return f"lmdynamics.metrics.{self.module}.{self.__name__}"


class _Spectrum:
    def __getattr__(self, name: str) -> _MetricFunction:
        return _MetricFunction("spectrum", name)


_spectrum = _Spectrum()
_anisotropy = _MetricFunction("anisotropy", "anisotropy")

#: GPT-NeoX weight matrices measured per layer (module name -> component); OV circuits come per head.
LAYER_MATRICES = {
    "attention.query_key_value": "qkv",
    "attention.dense": "dense",
    "mlp.dense_h_to_4h": "mlp_in",
    "mlp.dense_4h_to_h": "mlp_out",
}
#: A layer's matrices as summaries and figures group them ("ov" = the mean over its heads' OV circuits).
WEIGHT_MATRICES = ("qkv", "dense", "mlp_in", "mlp_out", "ov")
#: Probe activation components (``ov_head`` = every head's ``ov_headNN``); ``final`` is the final hidden state.
ACTIVATION_COMPONENTS = ("ov", "ov_head", "attn", "mlp", "resid", "final")
def head_component(k: int | None = None) -> str:
    """The component name of the output head (``head``) or of a mixture-of-softmaxes head's k-th component
    (``head_c00``, ...): what live and offline measurements of heads are recorded under."""
    return "head" if k is None else f"head_c{k:02d}"


def is_output_head(component: str) -> bool:
    """True for ``head`` and every ``head_cNN``."""
    return component == "head" or (component.startswith("head_c") and component[6:].isdigit())


def head_series(frame, metric: str):
    """The output head's ``metric`` per step, from tidy rows (a DataFrame with step, layer, component, metric,
    value): the head's own value, or a mixture's mean over its component heads (``head_c00``, ...). Columns
    step, value, sorted by step. The one reading of "the head's value": the live saturation monitor, compare
    and the saturation analysis all take it from here."""
    rows = frame[(frame["metric"] == metric) & (frame["layer"] == -1) & frame["component"].map(is_output_head)]
    if (rows["component"] == "head").any():  # a head of its own (tables of two models concatenated): that one
        rows = rows[rows["component"] == "head"]
    return rows.groupby("step", as_index=False)["value"].mean().sort_values("step", ignore_index=True)


#: Offline analysis kinds: what one unit of offline work computes (see ``lmdynamics.offline.runner``).
ANALYSES = ("weights", "activations", "cka_final", "cka_prev", "cka_ref")


@dataclass(frozen=True)
class Measurement:
    """One quantity of the tidy table (see the module docstring)."""

    name: str
    reads: str  # spectrum | activations | activation_pair | scalar
    label: str  # for axes and titles
    unit: str = ""  # "" = dimensionless
    fn: Callable | None = None  # the pure function of lmdynamics.metrics
    applies_to: str = "all"  # spectrum: "matrices" (every weight matrix) or "head"; others: "all"
    family: str = ""  # figure family: rank, cka, anisotropy, loss, head
    figures: bool = False  # the run report draws its family's figure kinds (FAMILIES) for it
    compare: str = ""  # compare draws it over tokens per run: "model" (layer -1), "head" (mean over output heads),
    #                    "layers" (mean over the layers' weight matrices); "" = not drawn
    log_axis: bool = False  # compare's curve on a log y axis (when every value is positive)
    analysis: str | None = None  # the offline analysis kind that writes it (None: live or summaries only)
    description: str = ""
    attainable: bool = False  # spectrum: fn(s, r) also takes the matrix's attainable rank r (d_head for OV circuits)

    def axis_label(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label


@dataclass(frozen=True)
class Family:
    """A figure family: the run report's section for it, the figure kinds (drawn by ``lmdynamics.report``) that
    each of its measurements with ``figures=True`` gets, and its combined figures (one each, drawing several of
    its measurements together); ``required`` is the measurement whose absence the report lists under "Not drawn"."""

    section: str
    kinds: tuple[str, ...] = ()
    required: str | None = None
    combined: tuple[str, ...] = ()


#: Figure families in report order. Kinds: ``over_steps`` (per model, every layer's matrices over steps, and the
#: same of the gradient for spectrum measurements), ``by_layer`` (per layer at each model's last step), ``lines``
#: and ``heatmap`` (per model, a CKA measurement per layer over steps), ``box`` (per model, the spread over layers
#: at a fraction of training), ``convergence`` (per layer, the fraction of training until it stays >= threshold).
#: Combined figures: ``losses`` (every loss of the table over steps), ``training_health`` (learning rate and
#: gradient norm), ``per_vs_convergence`` (each layer's PER against its CKA convergence), ``head_spectrum`` (per
#: model, sv_norm per step and kl_uniform), ``kl_across_models``, ``anisotropy_over_steps`` (last layer),
#: ``anisotropy_by_layer`` (first and last step), ``werror`` and ``lowrank_head`` (the softmax bottleneck's curves).
FAMILIES: dict[str, Family] = {
    "loss": Family("Loss", combined=("losses", "training_health")),
    "cka": Family("Layer convergence", ("lines", "heatmap", "box", "convergence"), required="cka_final"),
    "cka_reference": Family("Layer convergence", ("heatmap",)),
    "rank": Family("Effective rank of the weights", ("over_steps", "by_layer"), required="per",
                   combined=("per_vs_convergence",)),
    "head": Family("Output head and anisotropy", combined=("head_spectrum", "kl_across_models")),
    "anisotropy": Family("Output head and anisotropy", combined=("anisotropy_over_steps", "anisotropy_by_layer")),
    "bottleneck": Family("Softmax bottleneck", combined=("werror", "lowrank_head")),
}


def _sv_norm(s):
    """s / s_max (all zeros stay zeros)."""
    top = float(s.max()) if s.numel() else 0.0
    return s / top if top > 0 else s


_CKA = {"final": "the final checkpoint", "prev": "the previous measurement", "ref": "the reference model"}

CATALOGUE: dict[str, Measurement] = {m.name: m for m in [
    # -- spectra of weight matrices (and, prefixed grad_, of their gradients)
    Measurement("er", "spectrum", "effective rank", "dimensions", _spectrum.effective_rank, "matrices", "rank",
                analysis="weights", compare="head", description="exp of the entropy of s / sum(s) (Roy & Vetterli 2007)"),
    Measurement("per", "spectrum", "PER (ER / min(m, n))", "", _spectrum.proportional_effective_rank, "matrices",
                "rank", figures=True, analysis="weights",
                description="effective rank over the largest possible rank min(m, n)"),
    Measurement("per_attainable", "spectrum", "PER (ER / attainable rank)",
                "", _spectrum.proportional_effective_rank, "matrices", "rank", figures=True, analysis="weights",
                attainable=True, description="effective rank over the largest rank the matrix can reach: d_head for a "
                "head's OV circuit (min(2 d_head, d) for its gradient), min(m, n) for every other matrix"),
    Measurement("stable_rank", "spectrum", "stable rank", "dimensions", _spectrum.stable_rank, "matrices", "rank",
                analysis="weights", description="||W||_F^2 / ||W||_2^2"),
    Measurement("condition_number", "spectrum", "condition number", "", _spectrum.condition_number, "matrices",
                "rank", analysis="weights", description="s_max / s_min"),
    Measurement("gini", "spectrum", "Gini coefficient of the singular values", "", _spectrum.gini, "matrices", "rank",
                figures=True, analysis="weights", description="0 for a flat spectrum, (n - 1) / n for rank 1"),
    Measurement("kl_uniform", "spectrum", "KL(s / Σs ‖ uniform)", "nats", _spectrum.singular_entropy_kl_uniform,
                "head", "head", analysis="weights", compare="head",
                description="singular entropy's distance to a flat spectrum (Godey et al. 2024)"),
    Measurement("sv_norm", "spectrum", "singular value / largest", "", _sv_norm, "head", "head", analysis=None,
                description="the head's whole normalised spectrum, one row per singular value (index column)"),
    # -- probe activations
    Measurement("anisotropy", "activations", "anisotropy (mean pairwise cosine)", "", _anisotropy,
                family="anisotropy", analysis="activations",
                description="mean cosine similarity between distinct probe vectors (Ethayarajh 2019)"),
    *[Measurement(f"cka_{ref}{suffix}", "activation_pair",
                  f"linear CKA to {what} ({'unbiased' if suffix else 'biased'} HSIC)", "", None,
                  family="cka" if ref == "final" else "cka_reference", analysis=f"cka_{ref}",
                  figures=ref == "final" or not suffix,
                  description="Kornblith et al. 2019; unbiased HSIC: Song et al. 2012")
      for ref, what in _CKA.items() for suffix in ("", "_debiased")],
    # -- scalars of the training loop, the probe pass and the summaries
    Measurement("val_loss", "scalar", "validation loss", "nats/token", family="loss", compare="model"),
    Measurement("excess_loss", "scalar", "excess loss (val_loss - entropy floor)", "nats/token", family="loss",
                compare="model", log_axis=True,
                description="validation loss minus the synthetic language's exact entropy floor"),
    Measurement("loss", "scalar", "loss", "nats/token", family="loss"),
    Measurement("train_loss", "scalar", "training loss", "nats/token", family="loss"),
    Measurement("probe_loss", "scalar", "probe loss (mean next-token loss on the probe sequences)", "nats/token",
                family="loss", analysis="activations"),
    Measurement("converged_fraction", "scalar", "fraction of training until CKA-to-final stays ≥ threshold", "",
                family="cka", description="written at the end of a run by lmdynamics.cka_to_final"),
    Measurement("saturation_event", "scalar", "saturation event", "", family="head"),
    # -- the softmax bottleneck offline (lmdynamics.saturation.rows): index = d or r
    Measurement("w_error", "scalar", "W-error(d) = ||s_{d+1:}|| / ||s||", "", family="bottleneck",
                description="of a corpus's empirical next-token matrix, index = d (Godey et al. 2024)"),
    Measurement("lowrank_head_loss", "scalar", "loss with a rank-r head W = A B", "nats/token", family="bottleneck",
                description="frozen backbone, head trained at rank r = index"),
    Measurement("full_head_loss", "scalar", "loss with the checkpoint's own head", "nats/token", family="bottleneck"),
    Measurement("full_head_trained_loss", "scalar", "loss with a full-rank head trained like the rank-r ones",
                "nats/token", family="bottleneck"),
]}


def get(name: str) -> Measurement:
    """The entry of a table metric name; ``grad_X`` is X of the gradient. KeyError names the known ones."""
    if name in CATALOGUE:
        return CATALOGUE[name]
    if name.startswith("grad_") and name[5:] in CATALOGUE:
        base = CATALOGUE[name[5:]]
        return replace(base, name=name, label=f"{base.label} of the gradient", analysis=None)
    raise KeyError(f"unknown metric {name!r}; the catalogue has {sorted(CATALOGUE)}")


def label(name: str) -> str:
    """A metric's label for figures (the name itself for metrics outside the catalogue)."""
    try:
        return get(name).label
    except KeyError:
        return name


def spectrum_scalars(component: str) -> list[Measurement]:
    """The scalar spectrum measurements of a matrix component (the head gets its own too), in catalogue order."""
    head = component == "head"
    return [m for m in CATALOGUE.values()
            if m.reads == "spectrum" and m.name != "sv_norm" and (m.applies_to == "matrices" or head)]


def produced_by(analysis: str) -> list[str]:
    """The metrics an offline analysis kind writes for every checkpoint it completes (its resume test)."""
    return [m.name for m in CATALOGUE.values() if m.analysis == analysis and m.applies_to != "head"
            and not m.name.endswith("_debiased") and m.name != "probe_loss"]


def figured(family: str) -> list[Measurement]:
    """The measurements of a figure family whose figures the report draws."""
    return [m for m in CATALOGUE.values() if m.family == family and m.figures]


def compared() -> list[Measurement]:
    """The measurements ``lmdynamics compare`` draws over tokens, in catalogue order."""
    return [m for m in CATALOGUE.values() if m.compare]
