"""Checks of a resolved training config before anything is built or written: each bad setting is one
``ValueError`` naming the key and the fix (the CLI prints it as one line). Also the settings derived from the
config (the run renamed after an overridden Pythia size, gradient accumulation from ``data.global_batch_size``)."""

from __future__ import annotations

import os
from pathlib import Path

from ..models.zoo import ModelSpec
from .run_spec import RunSpec

LOGGERS = ("tensorboard", "csv", "wandb")


def check_config(cfg, subcommand: str) -> RunSpec:
    """Every check of one subcommand's config (``fit`` or ``validate``), the run renamed when its architecture
    overrides a Pythia size; returns the run section. The hub check comes last: it may open the network."""
    refuse_fsdp(cfg.trainer.strategy)
    name_overridden_size(cfg)
    run = RunSpec(**cfg.run)
    check_run_name(run.name)
    check_run_root(run)
    if run.resume_every <= 0:
        raise ValueError(f"run.resume_every must be a positive number of steps, got {run.resume_every}")
    unknown = set(run.loggers) - set(LOGGERS)
    if unknown:
        raise ValueError(f"run.loggers: unknown logger(s) {sorted(unknown)}; choose from tensorboard, csv, wandb")
    if "wandb" in run.loggers:
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise ValueError("run.loggers asks for wandb, which is not installed: `.venv/bin/pip install wandb` (or `pip install -e .[wandb]`)")
    max_steps = cfg.trainer.max_steps
    if subcommand == "fit" and (max_steps is None or max_steps <= 0):
        raise ValueError("trainer.max_steps must be set to a positive number of optimizer steps (the LR schedule and checkpoint schedule depend on it)")
    require_hub_for(cfg)  # a dry run opens the tokenizer and the dataset too
    return run


def set_accumulation(cfg) -> None:
    """``trainer.accumulate_grad_batches`` from ``data.global_batch_size`` (a multiple of batch x devices x nodes)."""
    gb = cfg.data.get("global_batch_size")
    if gb:
        per_step = cfg.data.batch_size * device_count(cfg.trainer.devices, cfg.trainer.accelerator) * (cfg.trainer.num_nodes or 1)
        if gb % per_step:
            raise ValueError(f"data.global_batch_size {gb} is not a multiple of batch_size x devices x nodes = {per_step}; change data.batch_size or the device count")
        cfg.trainer.accumulate_grad_batches = gb // per_step


def require_hub_for(cfg) -> None:
    """One line, before anything is written, when the config needs the hub (a hub dataset, tokenizer or
    reference model) and the hub cannot be reached (``lmdynamics.hub``)."""
    from ..data.datamodule import BUNDLED, SYNTHETIC
    from ..hub import is_hub_id, require_hub

    data = cfg.data
    needs = []
    if data.source not in (BUNDLED, SYNTHETIC) and is_hub_id(data.source):
        needs.append(f"dataset {data.source}")
    if data.source != SYNTHETIC and not str(data.tokenizer).startswith("bpe:") and is_hub_id(data.tokenizer):
        needs.append(f"tokenizer {data.tokenizer}")
    reference = cfg.convergence.get("init_args", cfg.convergence).get("reference") if cfg.get("convergence") else None
    if reference and is_hub_id(reference):
        needs.append(f"reference model {reference}")
    require_hub(needs, "offline, train on the bundled corpus (configs/train/demo.yaml, `make train`) or on local "
                       "files (--data.source path/ --data.tokenizer path/tokenizer.json or bpe:8192)")


def check_run_name(name: str) -> None:
    """The run directory is ``run.root/run.name``: a name is one path component (no separator, not . or ..), so
    that every row of the run's table carries the same name and the run stays where ``run.root`` says."""
    separators = {"/", os.sep, os.altsep or "/"}
    if not name or name in (".", "..") or any(sep in name for sep in separators) or "\0" in name:
        suggestion = "-".join(part for part in name.replace("\\", "/").split("/") if part not in ("", ".", "..")) or "my-run"
        raise ValueError(f"run.name {name!r} must be one directory name (no '/', not '.' or '..'): "
                         f"e.g. --run.name {suggestion}; put runs elsewhere with --run.root")


def check_run_root(run: RunSpec) -> None:
    """``run.root`` must be a place where the run directory can be created: tried with a temporary directory in
    its nearest existing ancestor (removed at once), so the message names run.root, not an errno."""
    import tempfile

    root = Path(run.root)
    existing = root.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"run.root {run.root}: {existing} is a file, not a directory; pick another --run.root")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".lmdynamics-", dir=existing))
    except OSError as err:
        raise ValueError(f"run.root {run.root}: cannot create the run directory there ({err.strerror} in {existing}); "
                         "pick a writable --run.root") from None


def refuse_fsdp(strategy) -> None:
    """FSDP shards parameters in a way the HF checkpoints and live measurements do not gather yet: say so at once."""
    name = strategy if isinstance(strategy, str) else str(getattr(strategy, "class_path", ""))
    if "fsdp" in name.lower():
        raise ValueError(f"trainer.strategy {name}: FSDP is not supported (HF checkpoints and live measurements gather "
                         "DeepSpeed ZeRO-3 shards only); use DeepSpeed, e.g. --config configs/train/scale/nodes-zero3.yaml")


def name_overridden_size(cfg) -> None:
    """A run named after a Pythia size whose architecture is overridden is renamed to say so.

    ``--config pythia-160m.yaml --model.model.num_layers 6`` runs as ``pythia-160m+num_layers=6``, not as
    ``pythia-160m``; a run name the user chose otherwise is kept (the model name in every row still says it).
    """
    spec = ModelSpec(**{k: v for k, v in vars(cfg.model.model).items() if not k.startswith("_")})
    if spec.size is None or not spec.overrides():
        return
    if cfg.run.name == f"pythia-{spec.size}":
        cfg.run.name = spec.name
    print(f"[lmdynamics] {spec.name}: the architecture overrides the published pythia-{spec.size} "
          f"({', '.join(f'{k}={v}' for k, v in spec.overrides().items())}); run name {cfg.run.name}")


def device_count(devices, accelerator) -> int:
    """How many devices the Trainer will use for ``trainer.devices`` (an int, a list, "auto" or "-1")."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, int) and devices > 0:
        return devices
    import torch

    if accelerator in (None, "auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.cuda.device_count()
    return 1
