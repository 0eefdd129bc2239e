"""Whole tensors from a distributed model: ZeRO-3 parameters gathered one at a time, probe activations
gathered to rank 0. Used by the live callbacks and the HF checkpoints; the offline analysis reads files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .measure import is_head_weight
from .probes import Activations, ProbeSet, capture


def is_zero3_param(p: torch.Tensor) -> bool:
    return hasattr(p, "ds_id")


def full_shape(p: torch.Tensor) -> torch.Size:
    """A parameter's shape, also for a ZeRO-3 shard (an empty flat tensor that keeps its full shape in ``ds_shape``)."""
    return getattr(p, "ds_shape", p.shape)


def iter_full_parameters(model: torch.nn.Module, skip=lambda name: False) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, full CPU tensor)`` for every parameter, gathering a ZeRO-3 shard one parameter at a time.

    Must be consumed on every rank under ZeRO-3 (the gather is collective); the yielded tensors are copies.
    """
    for name, p in model.named_parameters():
        if skip(name):
            continue
        if is_zero3_param(p):
            import deepspeed

            with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                yield name, p.detach().to("cpu", copy=True)
        else:
            yield name, p.detach().to("cpu")


def gathered_weight(model: torch.nn.Module, name: str) -> torch.Tensor:
    """One named parameter in full (CPU copy), gathered if sharded."""
    param = dict(model.named_parameters())[name]
    ctx = contextlib.nullcontext()
    if is_zero3_param(param):
        import deepspeed

        ctx = deepspeed.zero.GatheredParameters([param], modifier_rank=None)
    with ctx:
        return param.detach().to("cpu", copy=True)


def head_parameter_name(model: torch.nn.Module) -> str:
    for name, _ in model.named_parameters():
        if is_head_weight(name):
            return name
    raise ValueError("the model has no output head (embed_out / lm_head)")


def full_state_dict(trainer, module) -> dict | None:
    """The model's full state dict on rank 0 (None elsewhere), gathering ZeRO-3 shards when needed."""
    model = module.model
    if getattr(trainer.strategy, "zero_stage_3", False):
        params = iter_full_parameters(model)  # every rank takes part in the gathers
        state = {name: t for name, t in params if trainer.global_rank == 0}
        if trainer.global_rank == 0:
            state.update({name: buf.detach().cpu() for name, buf in model.named_buffers()})
        return state if trainer.global_rank == 0 else None
    return {k: v.detach().cpu() for k, v in model.state_dict().items()} if trainer.global_rank == 0 else None


def capture_distributed(trainer, model, probe: ProbeSet, batch_size: int, components=None) -> dict | None:
    """``probes.capture`` with the probe's sequences split over ranks and the rows gathered to rank 0."""
    world, rank = trainer.world_size, trainer.global_rank
    if world == 1:
        return capture(model, probe, batch_size=batch_size, components=components)
    n = probe.num_sequences
    share = -(-n // world)
    idx = torch.arange(rank * share, min(n, (rank + 1) * share))
    mine = capture(model, ProbeSet(probe.input_ids[idx], probe.positions[idx]), batch_size=batch_size,
                   components=components) if len(idx) else None
    per_seq = probe.num_positions
    out = {}
    device = trainer.strategy.root_device
    # rank 0 always holds rows (share >= 1): its keys and widths tell ranks without rows how to pad
    widths = {key: x.shape[1] for key, x in mine.items()} if rank == 0 else None
    widths = trainer.strategy.broadcast(widths, src=0)
    for key, width in sorted(widths.items()):
        x = mine[key] if mine is not None else torch.zeros(0, width)
        padded = torch.zeros(share * per_seq, width, dtype=x.dtype)
        padded[: x.shape[0]] = x
        gathered = trainer.strategy.all_gather(padded.to(device)).cpu()  # [world, share*P, d]
        if rank == 0:
            rows = [gathered[r, : max(0, min(n, (r + 1) * share) - r * share) * per_seq] for r in range(world)]
            out[key] = torch.cat(rows)
    return Activations(out, metadata={"probe": probe.fingerprint()}) if rank == 0 else None
