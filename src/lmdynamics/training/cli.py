"""LightningCLI wiring: YAML configs, the run directory, loggers, checkpoints and errors for people.

``python train/run.py fit --config configs/train/demo.yaml`` trains; ``validate`` evaluates. The run lives
in ``<run.root>/<run.name>``: the resolved config (config.yaml), run.json, HF checkpoints, Lightning's
resume checkpoint (lightning/last.ckpt), TensorBoard and CSV logs, and the tidy metrics table.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from ..atomic import write_text_atomic
from ..callbacks.base import Probe
from ..callbacks.convergence import ActivationConvergence
from ..callbacks.head_rank import HeadRank
from ..callbacks.hf_checkpoints import HFCheckpoints, run_description
from ..callbacks.table_logger import TidyTableLogger
from ..callbacks.weight_rank import WeightRank
from ..data.datamodule import TextDataModule
from ..models.zoo import ModelSpec
from .module import LMModule, NonFiniteLossError


@dataclass
class RunSpec:
    """Where the run lives and how it is logged.

    Args:
        name: run name; the run directory is ``root/name``.
        root: parent directory of runs.
        loggers: any of ``tensorboard``, ``csv``, ``wandb`` (W&B needs ``pip install wandb``).
        wandb_project: W&B project when ``wandb`` is among the loggers.
        resume_every: steps between Lightning resume checkpoints (``lightning/last.ckpt``).
        report: draw the run's figures and ``report/report.md`` from its tidy table when fit ends.
        dry_run: build the model on the meta device, print the architecture, parameter count, optimiser,
            schedule and batch this config resolves to, and stop: nothing is trained or written.
    """

    name: str = "demo"
    root: str = "runs"
    loggers: list[str] = field(default_factory=lambda: ["tensorboard", "csv"])
    wandb_project: str = "lmdynamics"
    resume_every: int = 50
    report: bool = True
    dry_run: bool = False

    @property
    def dir(self) -> Path:
        return Path(self.root) / self.name


class RunDirectoryExists(RuntimeError):
    pass


class LMCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_class_arguments(RunSpec, "run")
        parser.add_lightning_class_args(HFCheckpoints, "checkpoints")
        parser.add_lightning_class_args(Probe, "probe")
        parser.add_lightning_class_args(ActivationConvergence, "convergence")
        parser.add_lightning_class_args(WeightRank, "weight_rank")
        parser.add_lightning_class_args(HeadRank, "head_rank")
        parser.set_defaults({"trainer.use_distributed_sampler": False, "trainer.gradient_clip_val": 1.0})

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand]
        _refuse_fsdp(cfg.trainer.strategy)
        _name_overridden_size(cfg)
        run = RunSpec(**cfg.run)
        if run.resume_every <= 0:
            raise ValueError(f"run.resume_every must be a positive number of steps, got {run.resume_every}")
        unknown = set(run.loggers) - {"tensorboard", "csv", "wandb"}
        if unknown:
            raise ValueError(f"run.loggers: unknown logger(s) {sorted(unknown)}; choose from tensorboard, csv, wandb")
        if "wandb" in run.loggers:
            import importlib.util

            if importlib.util.find_spec("wandb") is None:
                raise ValueError("run.loggers asks for wandb, which is not installed: `.venv/bin/pip install wandb` (or `pip install -e .[wandb]`)")
        max_steps = cfg.trainer.max_steps
        if self.subcommand == "fit" and (max_steps is None or max_steps <= 0):
            raise ValueError("trainer.max_steps must be set to a positive number of optimizer steps (the LR schedule and checkpoint schedule depend on it)")
        if self.subcommand == "fit" and _launching_rank_zero() and not run.dry_run:
            ckpt = cfg.get("ckpt_path")
            fresh = not ckpt
            if fresh and run.dir.exists() and any(run.dir.iterdir()):
                raise RunDirectoryExists(f"run directory {run.dir} already exists; resume it with --ckpt_path last, or pick another --run.name")
            if ckpt == "last" and not (run.dir / "lightning" / "last.ckpt").is_file():
                raise FileNotFoundError(f"--ckpt_path last: no resume checkpoint at {run.dir / 'lightning' / 'last.ckpt'}; start the run without --ckpt_path")
            if ckpt and ckpt != "last" and not Path(ckpt).is_file():
                raise FileNotFoundError(f"--ckpt_path {ckpt} does not exist")
        gb = cfg.data.get("global_batch_size")
        if gb:
            per_step = cfg.data.batch_size * _device_count(cfg.trainer.devices, cfg.trainer.accelerator) * (cfg.trainer.num_nodes or 1)
            if gb % per_step:
                raise ValueError(f"data.global_batch_size {gb} is not a multiple of batch_size x devices x nodes = {per_step}; change data.batch_size or the device count")
            cfg.trainer.accumulate_grad_batches = gb // per_step
        self._run = run

    def after_instantiate_classes(self) -> None:
        """Check data and model against each other before anything is written to the run directory."""
        self.datamodule.prepare()
        spec = self.model.resolve_spec(self.datamodule)
        for callback in self.trainer.callbacks:
            if hasattr(callback, "check_config"):
                callback.check_config(self.datamodule, spec)
        if self._run.dry_run:
            return
        self._run.dir.mkdir(parents=True, exist_ok=True)
        self._write_config(self._run.dir)

    def instantiate_trainer(self, **kwargs):
        run = self._run
        loggers = [TidyTableLogger(run.dir, self.model)]  # the tidy table is always written
        if "tensorboard" in run.loggers:
            loggers.append(TensorBoardLogger(save_dir=str(run.dir), name="tensorboard", version=""))
        if "csv" in run.loggers:
            loggers.append(CSVLogger(save_dir=str(run.dir), name="csv", version=""))
        if "wandb" in run.loggers:
            from lightning.pytorch.loggers import WandbLogger

            loggers.append(WandbLogger(project=run.wandb_project, name=run.name, save_dir=str(run.dir)))
        resume = ModelCheckpoint(dirpath=str(run.dir / "lightning"), filename="step{step:08d}", save_top_k=0,
                                 save_last=True, every_n_train_steps=run.resume_every, auto_insert_metric_name=False)
        trainer_cfg = self._get(self.config_init, "trainer", default={})
        callbacks = trainer_cfg.get("callbacks") or []
        trainer_cfg = {**trainer_cfg, "callbacks": [*callbacks, resume], "default_root_dir": str(run.dir),
                       "logger": loggers, **kwargs}
        extra = [self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys]
        return self._instantiate_trainer(trainer_cfg, extra)

    def _run_subcommand(self, subcommand: str) -> None:
        if self._run.dry_run:
            print(json.dumps(self.plan(), indent=1))
            return
        super()._run_subcommand(subcommand)

    def plan(self) -> dict:
        """What this config builds, on the meta device: the architecture, optimiser, schedule and batch."""
        import torch

        module, trainer = self.model, self.trainer
        module.trainer = trainer
        with torch.device("meta"):
            module.configure_model()
        optimizer = module.configure_optimizers()["optimizer"]
        hf, dm = module.model.config, self.datamodule
        return {
            "model": module.spec.name,
            "built": {"num_layers": hf.num_hidden_layers, "hidden_size": hf.hidden_size,
                      "num_heads": hf.num_attention_heads, "vocab_size": hf.vocab_size,
                      "intermediate_size": hf.intermediate_size,
                      "rotary_pct": hf.rope_parameters["partial_rotary_factor"],
                      "rotary_base": hf.rope_parameters["rope_theta"], "parallel_residual": hf.use_parallel_residual,
                      "tied_head": hf.tie_word_embeddings, "max_position_embeddings": hf.max_position_embeddings},
            "adamw": {**{k: optimizer.defaults[k] for k in ("lr", "betas", "eps")},
                      "weight_decay_per_group": [g["weight_decay"] for g in optimizer.param_groups]},
            "tokens_per_step": dm.batch_size * dm.context_length * trainer.accumulate_grad_batches * trainer.world_size,
            **run_description(trainer, module),
        }

    def after_fit(self) -> None:
        if self._run.report and self.trainer.is_global_zero:
            from ..analysis.report import figures_for_run

            report = figures_for_run(self._run.dir)
            print(f"[lmdynamics] figures and report: {report}")

    def _write_config(self, run_dir: Path) -> None:
        """The resolved config of this invocation, atomically, as ``config.yaml`` (``config-<sub>.yaml`` for others)."""
        if not _launching_rank_zero():
            return
        name = "config.yaml" if self.subcommand == "fit" else f"config-{self.subcommand}.yaml"
        text = self._parser(self.subcommand).dump(self.config[self.subcommand], skip_none=False)
        write_text_atomic(run_dir / name, text)


def _refuse_fsdp(strategy) -> None:
    """FSDP shards parameters in a way the HF checkpoints and live measurements do not gather yet: say so at once."""
    name = strategy if isinstance(strategy, str) else str(getattr(strategy, "class_path", ""))
    if "fsdp" in name.lower():
        raise ValueError(f"trainer.strategy {name}: FSDP is not supported (HF checkpoints and live measurements gather "
                         "DeepSpeed ZeRO-3 shards only); use DeepSpeed, e.g. --config configs/train/scale/nodes-zero3.yaml")


def _name_overridden_size(cfg) -> None:
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


def _launching_rank_zero() -> bool:
    """True in the process of global rank 0 (or before any launcher has started others).

    Processes started by a launcher (Lightning's DDP re-execution, torchrun, SLURM) carry their rank in the
    environment; only rank 0 checks and creates the run directory.
    """
    for var in ("RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var]) == 0
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


def _device_count(devices, accelerator) -> int:
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


USER_ERRORS = (ValueError, FileNotFoundError, RunDirectoryExists, NonFiniteLossError, KeyError)


def build_cli(args=None) -> LMCLI:
    """Parse ``args`` (default: the command line) and run the subcommand; the CLI object keeps model and trainer."""
    return LMCLI(LMModule, TextDataModule, save_config_callback=None, seed_everything_default=1234,
                 parser_kwargs={"exit_on_error": False}, args=args)


def main(args=None) -> int:
    """Run the CLI; a user error becomes one line on stderr and exit status 2 (bad input) or 1 (training)."""
    try:
        build_cli(args)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except USER_ERRORS as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # jsonargparse's ArgumentError and friends: config problems
        if type(err).__name__ in {"ArgumentError", "NSKeyError", "ParserError"}:
            print(f"error: {_one_line(err)}", file=sys.stderr)
            return 2
        raise
    return 0


def _one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " ".join(lines[:3]) if len(lines) > 1 else lines[0]
