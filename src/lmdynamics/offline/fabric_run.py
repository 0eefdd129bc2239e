"""An offline analysis run under Lightning Fabric (what ``lmdynamics analyze`` runs once its config is parsed,
``lmdynamics.commands.analyze``), and what it needs from the hub."""

from __future__ import annotations

import os
import sys
import traceback
from datetime import timedelta

import torch

from lmdynamics.offline.config import AnalysisConfig


def run_analysis(config: AnalysisConfig, write_report=None) -> int:
    """Run an analysis under Lightning Fabric (one process per device; ``config.devices`` > 1 or
    ``num_nodes`` > 1 launches DDP processes that share the work). Returns the exit code. ``write_report``
    ``(table, out_dir)``: the report layer's writer, which the command hands down (``config.report``)."""
    from lightning.fabric import Fabric
    from lightning.fabric.strategies import DDPStrategy

    from lmdynamics.offline.runner import Runner

    world = config.devices * config.num_nodes
    # Phases can take hours; the barrier between them must not time out.
    strategy = DDPStrategy(timeout=timedelta(days=7)) if world > 1 else "auto"
    fabric = Fabric(accelerator=config.accelerator, devices=config.devices, num_nodes=config.num_nodes, strategy=strategy)
    fabric.launch()
    if fabric.device.type == "cpu" and fabric.world_size > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // config.devices))
    runner = Runner(
        config, rank=fabric.global_rank, world=fabric.world_size, device=fabric.device,
        barrier=fabric.barrier if fabric.world_size > 1 else None,
        broadcast=(lambda obj: fabric.broadcast(obj, src=0)) if fabric.world_size > 1 else None,
        write_report=write_report,
    )
    try:
        return runner.run()
    except ValueError as err:
        if fabric.global_rank == 0:
            print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 - print the trace, exit 1
        traceback.print_exc()
        return 1


OFFLINE_ALTERNATIVE = (
    "offline, analyse the checkpoints of `make train` (train first) with `make analyze CONFIG=configs/analysis/demo-run.yaml` "
    "(or --models runs/NAME --probe.source runs/NAME)"
)


def hub_needs(config: AnalysisConfig) -> list[str]:
    """What this analysis would fetch from the hub: hub models (and a hub reference model), a hub probe dataset."""
    from lmdynamics.offline.plan import parse_reference
    from lmdynamics.hub import is_hub_id

    models = list(config.models)
    reference, _ = parse_reference(config.reference) if "cka_ref" in config.analyses else (None, None)
    if reference is not None and reference not in models:
        models.append(reference)
    needs = [f"model {m}" for m in models if is_hub_id(m)]
    if set(config.analyses) - {"weights"} and is_hub_id(config.probe.source):
        needs.append(f"probe dataset {config.probe.source}")
    return needs
