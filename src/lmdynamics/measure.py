"""Thin adapters from model tensors to tidy-table rows, shared by the live callbacks and the offline runner.

Every function returns rows ``{"layer", "component", "metric", "value"}`` (and ``index`` where a row is one
of a vector's entries, e.g. the head's singular values); the caller adds run, model, step and tokens
(:func:`tag_rows`). Which quantities are computed, and with which function of ``lmdynamics.metrics``, is
read from ``lmdynamics.catalogue``, so a value computed live equals the value computed offline from the
same weights and probe, and a metric added to the catalogue is computed by both.

Weight matrices are recognised by their GPT-NeoX names, whatever the prefix (``gpt_neox.``, ``model.``,
a wrapper's ``module.``): per layer ``qkv`` (attention.query_key_value), ``dense`` (attention.dense),
``mlp_in`` (mlp.dense_h_to_4h), ``mlp_out`` (mlp.dense_4h_to_h) and ``ov_head{h:02d}`` (W_O^h W_V^h);
model level ``embed_in`` and ``head`` (``embed_out`` or ``lm_head``).

OV circuits have rank <= d_head (their gradients <= 2 d_head), so their singular values are those of a small
core: for ``A B`` with A (m x k), B (k x n), k < min(m, n), QR-factor ``A = Q_a R_a`` and ``B^T = Q_b R_b``;
then ``A B = Q_a (R_a R_b^T) Q_b^T`` and the nonzero singular values of ``A B`` are those of the k x k
``R_a R_b^T`` (the rest are exactly 0). That replaces one d x d SVD per head by a k x k one
(``metrics.ov_singular_values`` for weights, :func:`product_singular_values` for gradients).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

from lmdynamics import catalogue, metrics
from lmdynamics.metrics import product_singular_values


_LAYER_WEIGHT = re.compile(
    r"(?:^|\.)layers\.(\d+)\.(attention\.query_key_value|attention\.dense|mlp\.dense_h_to_4h|mlp\.dense_4h_to_h)\.weight$"
)
_EMBED = re.compile(r"(?:^|\.)embed_in\.weight$")
_HEAD = re.compile(r"(?:^|\.)(?:embed_out|lm_head)(?:\.heads\.(\d+))?\.weight$")  # plain, or a mixture's k-th head
_COMPONENT = catalogue.LAYER_MATRICES


def classify_weight(name: str) -> tuple[int, str] | None:
    """``(layer, component)`` of a GPT-NeoX weight name, or None for names that are not analysed
    (biases, layer norms). ``gpt_neox.layers.3.mlp.dense_h_to_4h.weight`` -> ``(3, "mlp_in")``."""
    m = _LAYER_WEIGHT.search(name)
    if m:
        return int(m.group(1)), _COMPONENT[m.group(2)]
    if _EMBED.search(name):
        return -1, "embed_in"
    m = _HEAD.search(name)
    if m:
        return -1, catalogue.head_component(None if m.group(1) is None else int(m.group(1)))
    return None


def is_head_weight(name: str) -> bool:
    """True for an output head's weight (``embed_out.weight``, ``lm_head.weight`` or a mixture-of-softmaxes
    component ``lm_head.heads.K.weight``, any prefix)."""
    kind = classify_weight(name)
    return kind is not None and catalogue.is_output_head(kind[1])


def tag_rows(rows: Iterable[Mapping], run: str, model: str, step: int, tokens: int) -> list[dict]:
    """Complete measurement rows into tidy-table rows."""
    return [{"run": run, "model": model, "step": int(step), "tokens": int(tokens), **row} for row in rows]



def _spectrum_rows(layer: int, component: str, s: torch.Tensor, prefix: str, head: bool, spectrum: bool,
                   attainable: int | None = None) -> list[dict]:
    """The catalogue's spectrum measurements of one matrix; with ``spectrum`` (the head) also its whole
    normalised spectrum, one ``sv_norm`` row per singular value (its position in ``index``). ``attainable``: the
    largest rank the matrix can have (an OV circuit's d_head), for measurements that take it; default min(m, n)."""
    rank = s.shape[-1] if attainable is None else attainable
    rows = [{"layer": layer, "component": component, "metric": prefix + m.name,
             "value": float(m.fn(s, rank) if m.attainable else m.fn(s))}
            for m in catalogue.spectrum_scalars("head" if head else component)]
    if head and spectrum:
        norm = catalogue.get("sv_norm").fn(s.detach().to("cpu", torch.float64))
        rows += [{"layer": layer, "component": component, "metric": prefix + "sv_norm", "index": i, "value": float(v)}
                 for i, v in enumerate(norm)]
    return rows


def _check(name: str, t: torch.Tensor) -> torch.Tensor:
    if t.numel() == 0:
        raise ValueError(f"tensor {name} is empty (a ZeRO-3 partition?); gather the parameters before measuring them")
    if t.ndim != 2:
        raise ValueError(f"tensor {name} has shape {tuple(t.shape)}; a 2-D weight matrix was expected")
    return t.detach()


def _v_and_o(w_qkv: torch.Tensor, w_dense: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head W_V^h [heads, d_head, d] and W_O^h [heads, d, d_head] (the metrics' layout helpers)."""
    mt = metrics
    return mt.split_qkv(w_qkv, None, num_heads)[2].weight, mt.split_dense(w_dense, num_heads)


def _ov_weight_rows(layer: int, w_qkv, w_dense, num_heads: int, prefix: str) -> list[dict]:
    spectra = metrics.ov_singular_values(w_qkv, w_dense, num_heads)  # [heads, d], through d_head x d_head cores
    d_head = w_qkv.shape[0] // (3 * num_heads)  # W_O^h W_V^h is d x d of rank <= d_head
    rows = []
    for h in range(num_heads):
        rows += _spectrum_rows(layer, f"ov_head{h:02d}", spectra[h], prefix, head=False, spectrum=False,
                               attainable=min(d_head, spectra.shape[-1]))
    return rows


def head_metric_rows(heads: Iterable[tuple[str, torch.Tensor]], spectrum: bool = False) -> list[dict]:
    """The rows of output-head matrices given as ``(component, V x d matrix)`` (``models.heads.head_matrices``:
    a plain or tied head, a low-rank head's A B, a mixture's components): what :func:`weight_metric_rows`
    writes for a head found by name, for heads that have no weight of their own name."""
    rows = []
    for component, w in heads:
        rows += _spectrum_rows(-1, component, metrics.singular_values(_check(component, w)), "", head=True, spectrum=spectrum)
    return rows


def weight_metric_rows(
    named_tensors: Iterable[tuple[str, torch.Tensor]], num_heads: int, spectrum: bool = False, prefix: str = "",
    tied_head: bool = False,
) -> list[dict]:
    """The catalogue's spectrum measurements (ER, PER, PER of the attainable rank, ...) of every GPT-NeoX weight
    matrix, streamed.

    ``named_tensors``: ``(name, tensor)`` pairs, e.g. ``model.named_parameters()`` or
    ``lmdynamics.checkpoints.iter_tensors(dir)``; unrecognised names are skipped. Per layer: qkv, dense,
    mlp_in, mlp_out and ov_head{h:02d}; model level: embed_in and head. The head also gets kl_uniform and,
    with ``spectrum=True``, its normalised spectrum s / s_max as ``sv_norm`` rows (the singular value's
    position in ``index``). One singular-value computation per matrix; only a layer's qkv and dense weights
    are held until its OV circuits are done. ``prefix`` is prepended to metric names. ``tied_head``: the
    input embedding is also the output head (a checkpoint saved with tied embeddings stores it once), so
    its spectrum also gives the head's rows.
    """
    mt = metrics
    rows: list[dict] = []
    pending: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in named_tensors:
        kind = classify_weight(name)
        if kind is None:
            del tensor
            continue
        layer, component = kind
        if tied_head and catalogue.is_output_head(component):  # the embedding's copy: measured with embed_in
            del tensor
            continue
        w = _check(name, tensor)
        s = mt.singular_values(w)  # any real dtype: converted to float64 a chunk at a time, no full copy
        rows += _spectrum_rows(layer, component, s, prefix, head=catalogue.is_output_head(component), spectrum=spectrum)
        if tied_head and component == "embed_in":
            rows += _spectrum_rows(-1, catalogue.head_component(), s, prefix, head=True, spectrum=spectrum)
        if component in ("qkv", "dense"):
            pending.setdefault(layer, {})[component] = w
            if len(pending[layer]) == 2:
                parts = pending.pop(layer)
                rows += _ov_weight_rows(layer, parts["qkv"], parts["dense"], num_heads, prefix)
                del parts
        del tensor, w, s  # release before the stream reads the next tensor: peak ~ one tensor + a layer's qkv/dense
    if pending:
        missing = {layer: sorted({"qkv", "dense"} - set(p)) for layer, p in pending.items()}
        raise ValueError(f"OV circuits need each layer's qkv and dense weights; missing {missing}")
    return rows


def gradient_metric_rows(
    named_grads: Iterable[tuple[str, torch.Tensor]],
    named_params: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
    num_heads: int,
) -> list[dict]:
    """The rows of :func:`weight_metric_rows` for gradients (metrics prefixed ``grad_``).

    The OV gradient of head h is ``G_O W_V + W_O G_V`` (product rule on W_O^h W_V^h), whose singular
    values are those of ``[G_O | W_O] @ [W_V ; G_V]`` (rank <= 2 d_head). ``named_params`` supplies W_O
    and W_V (matched to the gradients by layer, whatever the name prefix).
    """
    params: dict[tuple[int, str], torch.Tensor] = {}
    for name, p in named_params.items() if isinstance(named_params, Mapping) else named_params:
        kind = classify_weight(name)
        if kind is not None and kind[1] in ("qkv", "dense"):
            params[kind] = p
    mt = metrics
    rows: list[dict] = []
    pending: dict[int, dict[str, torch.Tensor]] = {}
    for name, grad in named_grads:
        kind = classify_weight(name)
        if kind is None or grad is None:
            del grad
            continue
        layer, component = kind
        g = _check(name, grad)
        rows += _spectrum_rows(layer, component, mt.singular_values(g.float()), "grad_", head=catalogue.is_output_head(component), spectrum=False)
        if component in ("qkv", "dense"):
            pending.setdefault(layer, {})[component] = g
            if len(pending[layer]) == 2:
                grads = pending.pop(layer)
                if (layer, "qkv") not in params or (layer, "dense") not in params:
                    raise ValueError(f"the OV gradient of layer {layer} needs its qkv and dense weights in named_params")
                w_qkv = _check(f"layer {layer} qkv", params[(layer, "qkv")]).float()
                w_dense = _check(f"layer {layer} dense", params[(layer, "dense")]).float()
                v, o = _v_and_o(w_qkv, w_dense, num_heads)
                gv, go = _v_and_o(grads["qkv"].float(), grads["dense"].float(), num_heads)
                for h in range(num_heads):
                    s = product_singular_values(torch.cat([go[h], o[h]], 1), torch.cat([v[h], gv[h]], 0))
                    rows += _spectrum_rows(layer, f"ov_head{h:02d}", s, "grad_", head=False, spectrum=False,
                                           attainable=min(2 * v.shape[1], s.shape[-1]))  # rank <= 2 d_head
                del grads
        del grad, g
    if pending:
        raise ValueError(f"the OV gradient needs each layer's qkv and dense gradients; incomplete layers {sorted(pending)}")
    return rows


def activation_metric_rows(
    acts: Mapping[tuple[int, str], torch.Tensor],
    reference_acts: Mapping[tuple[int, str], torch.Tensor],
    metric: str = "cka_final",
    debiased: bool = False,
) -> list[dict]:
    """Linear CKA of every (layer, component) in both ``acts`` and ``reference_acts`` (same probe rows).

    The metric is named ``metric`` (``cka_final``, ``cka_prev``, ``cka_ref``), with ``_debiased``
    appended for the unbiased-HSIC estimator.
    """
    linear_cka = metrics.linear_cka
    keys = sorted(set(acts) & set(reference_acts))
    if not keys:
        raise ValueError("activations and reference activations share no (layer, component); were they captured alike?")
    name = metric + "_debiased" if debiased and not metric.endswith("_debiased") else metric
    rows = []
    for key in keys:
        x, y = acts[key], reference_acts[key]
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{key}: {x.shape[0]} probe vectors against {y.shape[0]} in the reference; use the same probe")
        rows.append({"layer": key[0], "component": key[1], "metric": name, "value": float(linear_cka(x, y, debiased=debiased))})
    return rows


def cka_rows(acts, reference_acts, kind: str, debiased: bool = False) -> list[dict]:
    """The ``kind`` rows (``cka_final``, ``cka_prev``, ``cka_ref``) of one step against its reference: biased
    linear CKA, and with ``debiased`` also the unbiased-HSIC estimate (``<kind>_debiased``). The live callbacks,
    the end-of-run CKA-to-final and the offline runner all compute CKA here."""
    rows = activation_metric_rows(acts, reference_acts, metric=kind)
    if debiased:
        rows += activation_metric_rows(acts, reference_acts, metric=kind, debiased=True)
    return rows


def anisotropy_rows(acts: Mapping[tuple[int, str], torch.Tensor]) -> list[dict]:
    """Anisotropy (mean pairwise cosine similarity of the probe vectors) of every (layer, component)."""
    anisotropy = catalogue.get("anisotropy").fn
    return [
        {"layer": layer, "component": component, "metric": "anisotropy", "value": float(anisotropy(x))}
        for (layer, component), x in sorted(acts.items())
    ]


def probe_loss_rows(loss: float | None) -> list[dict]:
    """The probe's mean next-token loss as a row (layer -1, component ``model``, metric ``probe_loss``)."""
    return [] if loss is None else [{"layer": -1, "component": "model", "metric": "probe_loss", "value": float(loss)}]
