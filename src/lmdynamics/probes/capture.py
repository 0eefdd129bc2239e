"""Probe capture: one no-grad, eval-mode forward pass with hooks on every layer of a GPT-NeoX model.

Components per layer (tidy-table names): ``ov`` and ``ov_head{h:02d}`` (attention OV activation, see
below), ``attn`` (output of ``attention.dense``), ``mlp`` (output of ``mlp.dense_4h_to_h``), ``resid``
(residual stream after the layer); model level (layer -1): ``final`` (output of ``final_layer_norm``).

OV activation ("Tending Towards Stability", 2024, sec. 3): the value vectors at the probe positions pushed
through each head's slice of the output projection, without the attention pattern and without the dense
bias: ``ov_head_h = v_h W_O[:, h*dh:(h+1)*dh]^T``, ``ov = sum_h ov_head_h``. The values come from the
fused QKV output viewed as [heads, 3, d_head] (docs/science.md sec. 1), i.e. they include the QKV bias.

The OV product is computed in a hook on ``attention.dense`` registered with ``prepend=True``, so that under
DeepSpeed ZeRO-3 the dense weight is still gathered when the hook reads it. The probe loss, when asked
for, applies the model's own output head to the hooked final hidden states in chunks: still one model
forward per batch, and never a [batch, T, vocab] logits tensor.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import nn

from lmdynamics.catalogue import ACTIVATION_COMPONENTS as ALL_COMPONENTS
from lmdynamics.probes.probeset import ProbeSet

_LOGIT_CHUNK_ELEMENTS = 1 << 26  # ~256 MB of float32 logits per chunk in the probe loss


class Activations(dict):
    """``{(layer, component): float32 CPU tensor [N*P, d]}`` plus ``loss`` (mean next-token loss over the
    probe sequences, or None), ``forward_passes`` (model forwards run) and ``metadata`` (strings)."""

    def __init__(self, *args, loss: float | None = None, forward_passes: int = 0, metadata=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss = loss
        self.forward_passes = forward_passes
        self.metadata: dict[str, str] = dict(metadata or {})


def find_gpt_neox(model: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """The GPT-NeoX base model (embed_in, layers, final_layer_norm) inside ``model`` and its output head.

    ``model`` may be a GPTNeoXForCausalLM, its ``gpt_neox`` base, or anything holding one as a submodule
    (a LightningModule, a DDP or DeepSpeed wrapper). The head is None when only the base is given.
    """
    base = None
    for module in model.modules():
        if _looks_like_base(module):
            base = module
            break
    if base is None:
        raise ValueError(
            f"{type(model).__name__} holds no GPT-NeoX model (a module with embed_in, layers and final_layer_norm); "
            "pass a GPTNeoXForCausalLM or a module that contains one"
        )
    head = None
    for module in model.modules():
        if getattr(module, "gpt_neox", None) is base and hasattr(module, "get_output_embeddings"):
            head = module.get_output_embeddings()
            break
    return base, head


def _looks_like_base(module: nn.Module) -> bool:
    layers = getattr(module, "layers", None)
    return (
        isinstance(layers, nn.ModuleList)
        and len(layers) > 0
        and hasattr(module, "embed_in")
        and hasattr(module, "final_layer_norm")
        and hasattr(layers[0], "attention")
        and hasattr(layers[0].attention, "query_key_value")
    )


def _num_heads(base: nn.Module) -> int:
    config = getattr(base, "config", None)
    if config is not None and getattr(config, "num_attention_heads", None):
        return int(config.num_attention_heads)
    attn = base.layers[0].attention
    return int(attn.query_key_value.out_features // (3 * attn.head_size))


@torch.no_grad()
def capture(
    model: nn.Module,
    probe: ProbeSet,
    batch_size: int = 32,
    components: tuple[str, ...] | list[str] | None = None,
    loss: bool = False,
    device: torch.device | str | None = None,
) -> Activations:
    """Probe activations of every layer from ONE forward pass per batch of probe sequences.

    Returns float32 CPU tensors (N*P, d) keyed ``(layer, component)`` (see the module docstring);
    ``components`` selects a subset of ``("ov", "ov_head", "attn", "mlp", "resid", "final")`` (``ov_head``
    = every ``ov_head{h:02d}``). With ``loss=True`` the result's ``.loss`` is the mean next-token
    cross-entropy over all probe tokens. The model is put in eval mode and every module's training flag is
    restored afterwards. Inputs go to ``device`` (default: the device of the model's parameters).
    """
    if batch_size < 1:
        raise ValueError(f"capture batch_size must be >= 1, got {batch_size}")
    comps = set(ALL_COMPONENTS if components is None else components)
    unknown = comps - set(ALL_COMPONENTS)
    if unknown:
        raise ValueError(f"unknown capture component(s) {sorted(unknown)}; choose from {list(ALL_COMPONENTS)}")
    base, head = find_gpt_neox(model)
    if loss and head is None:
        raise ValueError("probe loss needs the output head: pass the GPTNeoXForCausalLM, not its gpt_neox base")
    vocab = base.embed_in.num_embeddings
    if int(probe.input_ids.max()) >= vocab:
        raise ValueError(
            f"probe token id {int(probe.input_ids.max())} >= the model's vocabulary size {vocab}: "
            "the probe was tokenised with another tokenizer; rebuild it with the model's tokenizer"
        )
    num_heads = _num_heads(base)
    if device is None:
        param = next(base.parameters(), None)
        device = param.device if param is not None and param.device.type != "meta" else torch.device("cpu")

    chunks: dict[tuple[int, str], list[torch.Tensor]] = defaultdict(list)
    state: dict = {}
    handles = []

    def pick(out: torch.Tensor) -> torch.Tensor:
        """Rows of ``out`` [B, T, D] at the batch's probe positions -> [B*P, D] float32."""
        if isinstance(out, tuple):
            out = out[0]
        pos = state["pos"]
        rows = torch.arange(pos.shape[0], device=out.device)[:, None]
        return out[rows, pos].reshape(-1, out.shape[-1]).float()

    def store(key, value: torch.Tensor) -> None:
        chunks[key].append(value.detach().to("cpu", torch.float32))

    for i, layer in enumerate(base.layers):
        attn = layer.attention
        if comps & {"ov", "ov_head"}:

            def qkv_hook(module, args, out, i=i):
                sel = pick(out)  # [n, 3d], head-interleaved: [heads, 3, d_head]
                n = sel.shape[0]
                state[("v", i)] = sel.view(n, num_heads, 3, -1)[:, :, 2, :]

            def dense_ov_hook(module, args, out, i=i):
                v = state.pop(("v", i))  # [n, heads, d_head]
                w_o = module.weight.float()  # [d, d], input index h*d_head + e
                per_head = torch.einsum("nhe,dhe->nhd", v, w_o.view(w_o.shape[0], num_heads, -1))
                if "ov" in comps:
                    store((i, "ov"), per_head.sum(1))
                if "ov_head" in comps:
                    for h in range(num_heads):
                        store((i, f"ov_head{h:02d}"), per_head[:, h])

            handles.append(attn.query_key_value.register_forward_hook(qkv_hook))
            handles.append(attn.dense.register_forward_hook(dense_ov_hook, prepend=True))
        if "attn" in comps:
            handles.append(attn.dense.register_forward_hook(lambda m, a, o, i=i: store((i, "attn"), pick(o))))
        if "mlp" in comps:
            handles.append(layer.mlp.dense_4h_to_h.register_forward_hook(lambda m, a, o, i=i: store((i, "mlp"), pick(o))))
        if "resid" in comps:
            handles.append(layer.register_forward_hook(lambda m, a, o, i=i: store((i, "resid"), pick(o))))

    def final_hook(module, args, out):
        if "final" in comps:
            store((-1, "final"), pick(out))
        if loss:
            state["loss_sum"] += _next_token_loss_sum(head, out, state["ids"])
            state["loss_count"] += state["ids"].numel() - state["ids"].shape[0]

    handles.append(base.final_layer_norm.register_forward_hook(final_hook))

    modes = {m: m.training for m in model.modules()}
    model.eval()
    passes = 0
    state["loss_sum"], state["loss_count"] = 0.0, 0
    try:
        for start in range(0, probe.num_sequences, batch_size):
            ids = probe.input_ids[start : start + batch_size].to(device)
            state["pos"] = probe.positions[start : start + batch_size].to(device)
            state["ids"] = ids
            base(input_ids=ids, use_cache=False)
            passes += 1
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
    acts = Activations(
        {key: torch.cat(parts) for key, parts in sorted(chunks.items())},
        forward_passes=passes,
        metadata={"probe": probe.fingerprint()},
    )
    if loss and state["loss_count"]:
        acts.loss = state["loss_sum"] / state["loss_count"]
    return acts


def _next_token_loss_sum(head: nn.Module, hidden: torch.Tensor, ids: torch.Tensor) -> float:
    """Sum of next-token cross-entropies of a batch, logits computed a few rows at a time."""
    if isinstance(hidden, tuple):
        hidden = hidden[0]
    h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    target = ids[:, 1:].reshape(-1)
    vocab = getattr(head, "out_features", None) or head.weight.shape[0]
    step = max(1, _LOGIT_CHUNK_ELEMENTS // vocab)
    total = 0.0
    for s in range(0, h.shape[0], step):
        logits = head(h[s : s + step]).float()
        total += float(F.cross_entropy(logits, target[s : s + step], reduction="sum"))
    return total
