"""The offline analysis command: ``lmdynamics analyze`` (and ``analysis/run.py``, ``make analyze``).

Parsed by jsonargparse, as training is: ``--config FILE.yaml`` (several allowed, later ones win) and any
field of :class:`~lmdynamics.offline.config.AnalysisConfig` as a flag (``--steps 0,1000``,
``--probe.source runs/demo``); the older spellings ``--probe X``, ``--batch-size``, ``--num-nodes`` still work.
Exit codes: 0 done, 1 some checkpoint failed (the rest analysed), 2 bad input (one line on stderr).
"""

from __future__ import annotations

import os
import sys
import traceback
from datetime import timedelta

import torch

from lmdynamics.offline.config import AnalysisConfig, ProbeConfig, validate
from lmdynamics.arguments import error_line

_LEGACY = {"--batch-size": "--batch_size", "--num-nodes": "--num_nodes", "--probe": "--probe.source"}


def build_parser():
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(
        prog="lmdynamics analyze", exit_on_error=False,
        description="Analyse checkpoints (hub revisions or local runs) into <out>/metrics.parquet; flags override the YAML.",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="analysis YAML (configs/analysis/*.yaml)")
    parser.add_class_arguments(AnalysisConfig, fail_untyped=False, sub_configs=True)
    return parser


def _legacy(argv: list[str]) -> list[str]:
    """The older flag spellings in today's (``--probe X`` is ``--probe.source X``)."""
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        out.append(_LEGACY.get(name, name) + eq + value if name in _LEGACY else arg)
    return out


def parse(argv: list[str] | None = None) -> AnalysisConfig:
    """The validated configuration of a command line; ValueError (one line) for bad input."""
    from lmdynamics.config_files import check_config_files

    argv = _legacy(list(sys.argv[1:] if argv is None else argv))
    problem = check_config_files(argv)
    if problem:
        raise ValueError(problem)
    try:
        values = build_parser().parse_args(argv).as_dict()
    except Exception as err:  # jsonargparse's ArgumentError and friends
        known = [f.name for f in AnalysisConfig.__dataclass_fields__.values()]
        raise ValueError(error_line(err, argv, known, "analysis config")) from None
    values.pop("config", None)
    probe = values.pop("probe", None) or {}
    return validate(AnalysisConfig(**values, probe=ProbeConfig(**probe)))


def run_analysis(config: AnalysisConfig) -> int:
    """Run an analysis under Lightning Fabric (one process per device; ``config.devices`` > 1 or
    ``num_nodes`` > 1 launches DDP processes that share the work). Returns the exit code."""
    from lightning.fabric import Fabric
    from lightning.fabric.strategies import DDPStrategy

    from lmdynamics.offline.runner import Runner
    from lmdynamics.report.run_report import write_report

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


def main(argv: list[str] | None = None) -> int:
    """``lmdynamics analyze``; returns the exit code (0 ok, 1 some checkpoint failed, 2 bad input)."""
    from lmdynamics.hub import require_hub

    try:
        config = parse(argv)
        require_hub(hub_needs(config), OFFLINE_ALTERNATIVE)  # before anything is written to config.out
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return run_analysis(config)
