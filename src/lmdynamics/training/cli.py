"""LightningCLI wiring: YAML configs, the run directory, loggers, checkpoints and errors for people.

``python train/run.py fit --config configs/train/demo.yaml`` trains; ``validate`` evaluates. The run lives
in ``<run.root>/<run.name>``: the resolved config (config.yaml), run.json, HF checkpoints, Lightning's
resume checkpoint (lightning/last.ckpt), TensorBoard and CSV logs, and the tidy metrics table.

``fit --ckpt_path last`` resumes a run exactly where its last checkpoint left it, logs included (rows the
killed process wrote after the checkpoint are replaced, earlier ones kept); a finished run only redoes its
end-of-run work; a run killed before its first checkpoint starts again. ``validate`` never touches the
run's logs or table: it writes to ``<run>/evaluations/validate-stepNNNNNNNN``, rows labelled with the
checkpoint's step.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from ..atomic import write_text_atomic
from ..config_files import check_config_files
from ..callbacks.base import MeasurementCallback
from ..callbacks.convergence import ActivationConvergence
from ..callbacks.head_rank import HeadRank
from ..callbacks.trajectories import TrajectoryRecorder
from ..callbacks.hf_checkpoints import HFCheckpoints, run_description
from ..callbacks.probe import Probe
from ..callbacks.progress import ProgressLines, with_step_bar
from ..callbacks.table_logger import TidyTableLogger
from ..callbacks.weight_rank import WeightRank
from ..data.datamodule import TextDataModule
from ..models.zoo import ModelSpec
from ..layout import RunLayout
from .loggers import RunCSVLogger, RunTensorBoardLogger
from .module import LMModule, NonFiniteLossError, step_tokens
from .resume import INTERRUPTED, ResumeCheckpoint, read_checkpoint_state
from .run_status import finished_step, mark_finished


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


class RunFinished(Exception):
    """``fit --ckpt_path last`` of a run that has done all its steps: nothing to train (not an error)."""


def _parser_kwargs() -> dict:
    # no option prefixes (argparse would take --trainer.max_step for --trainer.max_steps), in every subparser
    strict = {"allow_abbrev": False}
    return {"exit_on_error": False, **strict, **{sub: dict(strict) for sub in SUBCOMMANDS}}


SUBCOMMANDS = {"fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
               "validate": {"model", "dataloaders", "datamodule"}}


class LMCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """fit and validate; test and predict have no implementation here and are not offered."""
        return {name: set(skip) for name, skip in SUBCOMMANDS.items()}

    def _parse_ckpt_path(self) -> None:
        """Lightning reads a checkpoint file's hyperparameters here, first thing: a file that is no checkpoint
        must be one line for people, not a traceback."""
        sub = self.config.get("subcommand")
        ckpt = self.config[sub].get("ckpt_path") if sub else None
        if ckpt and Path(ckpt).is_file():
            read_checkpoint_state(ckpt)
        super()._parse_ckpt_path()

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_class_arguments(RunSpec, "run")
        parser.add_lightning_class_args(HFCheckpoints, "checkpoints")
        parser.add_lightning_class_args(Probe, "probe")
        parser.add_lightning_class_args(ActivationConvergence, "convergence")
        parser.add_lightning_class_args(WeightRank, "weight_rank")
        parser.add_lightning_class_args(HeadRank, "head_rank")
        parser.add_lightning_class_args(TrajectoryRecorder, "trajectories")
        parser.add_lightning_class_args(ProgressLines, "progress")
        parser.set_defaults({"trainer.use_distributed_sampler": False, "trainer.gradient_clip_val": 1.0})

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand]
        _refuse_fsdp(cfg.trainer.strategy)
        _name_overridden_size(cfg)
        run = RunSpec(**cfg.run)
        _check_run_name(run.name)
        _check_run_root(run)
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
        self._resume: dict | None = None  # the checkpoint's step and log positions when resuming
        self._eval_dir: Path | None = None
        _require_hub_for(cfg)  # a dry run opens the tokenizer and the dataset too
        if run.dry_run:
            pass  # nothing is read from or written to the run directory
        elif self.subcommand == "fit":
            self._check_fit_start(cfg, run)
        else:
            self._plan_evaluation(cfg, run)
        gb = cfg.data.get("global_batch_size")
        if gb:
            per_step = cfg.data.batch_size * _device_count(cfg.trainer.devices, cfg.trainer.accelerator) * (cfg.trainer.num_nodes or 1)
            if gb % per_step:
                raise ValueError(f"data.global_batch_size {gb} is not a multiple of batch_size x devices x nodes = {per_step}; change data.batch_size or the device count")
            cfg.trainer.accumulate_grad_batches = gb // per_step
        self._run = run

    def _check_fit_start(self, cfg, run: RunSpec) -> None:
        """A fresh run needs an empty directory; ``--ckpt_path last`` resumes from ``lightning/last.ckpt``."""
        ckpt = cfg.get("ckpt_path")
        last = run.dir / "lightning" / "last.ckpt"
        started = RunLayout(run.dir).started()  # a sweep's log alone is no start
        if not ckpt:
            if started and _launching_rank_zero():
                raise RunDirectoryExists(f"run directory {run.dir} already exists; resume it with --ckpt_path last, or pick another --run.name")
            return
        if ckpt == "last" and not last.exists():
            if not started:
                raise FileNotFoundError(f"--ckpt_path last: no resume checkpoint at {last}; start the run without --ckpt_path")
            # killed before its first checkpoint: start again, in place of what the killed process logged
            print(f"[lmdynamics] {run.dir} has no resume checkpoint yet: training it again from step 0", file=sys.stderr)
            cfg.ckpt_path = None
            self._resume = {"step": 0, "logs": {"tidy": {"step": -1}, "csv": {"rows": 0}, "tensorboard": {"sizes": {}}}}
            return
        path = last if ckpt == "last" else Path(ckpt)
        if not path.exists():
            raise FileNotFoundError(f"--ckpt_path {ckpt} does not exist")
        cfg.ckpt_path = str(path)
        self._resume = read_checkpoint_state(path)
        if self._resume and self._resume["step"] >= cfg.trainer.max_steps:
            if _launching_rank_zero() and finished_step(run.dir) != self._resume["step"]:
                self._finish_completed_run(cfg, run)  # killed during its end-of-run work: complete it
                mark_finished(run.dir, self._resume["step"])
            raise RunFinished(f"{run.dir} already finished its {cfg.trainer.max_steps} steps; its end-of-run results "
                              "are up to date (nothing to do)")

    @staticmethod
    def _finish_completed_run(cfg, run: RunSpec) -> None:
        """The work done after the last step (CKA-to-final, table compaction, report), again and idempotently:
        a run killed during it is complete afterwards, a complete run is unchanged."""
        from .. import store
        from ..analysis.convergence import finalize_run

        conv = cfg.convergence
        if conv.enabled and conv.store_activations and (run.dir / "activations").is_dir():
            finalize_run(run.dir, threshold=conv.threshold, debiased=conv.debiased)
        store.compact(store.table_path(run.dir))
        if run.report:
            from ..analysis.report import figures_for_run

            print(f"[lmdynamics] figures and report: {figures_for_run(run.dir)}")

    def _plan_evaluation(self, cfg, run: RunSpec) -> None:
        """``validate`` writes to ``<run>/evaluations/<sub>-stepN`` (built under a temporary name), never to the
        run's own logs; its rows carry the step of the checkpoint evaluated."""
        ckpt = cfg.get("ckpt_path")
        if ckpt == "last":
            ckpt = str(run.dir / "lightning" / "last.ckpt")
        if ckpt and not Path(ckpt).exists():
            raise FileNotFoundError(f"--ckpt_path {ckpt} does not exist")
        state = read_checkpoint_state(ckpt) if ckpt else None
        if ckpt:
            cfg.ckpt_path = ckpt
        self._eval_step = state["step"] if state else 0
        self._eval_dir = run.dir / "evaluations" / f"{self.subcommand}-step{self._eval_step:08d}"

    def after_instantiate_classes(self) -> None:
        """Check data and model against each other before anything is written to the run directory."""
        self.datamodule.prepare()
        spec = self.model.resolve_spec(self.datamodule)
        for callback in self.trainer.callbacks:
            if hasattr(callback, "check_config"):
                callback.check_config(self.datamodule, spec)
        if self._run.dry_run:
            return
        out = self._output_dir()
        if self._eval_dir is not None and out.exists() and _launching_rank_zero():
            shutil.rmtree(out)  # left by a killed evaluation
        out.mkdir(parents=True, exist_ok=True)
        self._write_config(out)

    def _output_dir(self) -> Path:
        """Where this invocation writes: the run directory (fit) or a temporary evaluation directory."""
        if self._eval_dir is None:
            return self._run.dir
        return self._eval_dir.with_name(f".{self._eval_dir.name}.tmp")

    def instantiate_trainer(self, **kwargs):
        run, out = self._run, self._output_dir()
        step = None if self._eval_dir is None else self._eval_step
        loggers = [TidyTableLogger(out, self.model, step=step, run_name=run.name)]  # the tidy table is always written
        if "tensorboard" in run.loggers:
            loggers.append(RunTensorBoardLogger(out, step=step))
        if "csv" in run.loggers:
            loggers.append(RunCSVLogger(out, step=step))
        if self._resume and self._resume.get("logs") is not None and _launching_rank_zero():
            for logger in loggers:
                logger.rewind(self._resume["logs"].get(logger.name, {}))
        if "wandb" in run.loggers:
            from lightning.pytorch.loggers import WandbLogger

            loggers.append(WandbLogger(project=run.wandb_project, name=run.name, save_dir=str(out)))
        trainer_cfg = self._get(self.config_init, "trainer", default={})
        callbacks = with_step_bar(trainer_cfg.get("callbacks") or [], trainer_cfg.get("enable_progress_bar"))
        trainer_cfg = {**trainer_cfg, "callbacks": [*callbacks, ResumeCheckpoint(run.dir / "lightning", run.resume_every)],
                       "default_root_dir": str(out), "logger": loggers, **kwargs}
        extra = [self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys]
        self._wire_measurements(extra)
        return self._instantiate_trainer(trainer_cfg, extra)

    def _wire_measurements(self, callbacks) -> None:
        """Hand every measuring callback the run's probe and checkpoint schedule (explicit wiring: no callback
        looks another up)."""
        probe = self._get(self.config_init, "probe")
        ckpt = self._get(self.config_init, "checkpoints")
        for callback in callbacks:
            if isinstance(callback, MeasurementCallback):
                callback.attach(probe, (ckpt.every, ckpt.log_cap))

    def _run_subcommand(self, subcommand: str) -> None:
        if self._run.dry_run:
            print(json.dumps(self.plan(), indent=1))
            return
        try:
            super()._run_subcommand(subcommand)
        finally:  # a failed evaluation leaves no partial output
            tmp = self._output_dir()
            if self._eval_dir is not None and tmp.exists() and _launching_rank_zero():
                shutil.rmtree(tmp, ignore_errors=True)

    def after_validate(self) -> None:
        if self.trainer.is_global_zero:
            final, tmp = self._eval_dir, self._output_dir()
            old = final.with_name(f".{final.name}.old")
            if final.exists():
                final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
            print(f"[lmdynamics] validation of step {self._eval_step} written to {final}")

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
            "run_directory": str(self._run.dir.absolute()),
            "model": module.spec.name,
            "built": {"num_layers": hf.num_hidden_layers, "hidden_size": hf.hidden_size,
                      "num_heads": hf.num_attention_heads, "vocab_size": hf.vocab_size,
                      "intermediate_size": hf.intermediate_size,
                      "rotary_pct": hf.rope_parameters["partial_rotary_factor"],
                      "rotary_base": hf.rope_parameters["rope_theta"], "parallel_residual": hf.use_parallel_residual,
                      "tied_head": hf.tie_word_embeddings, "max_position_embeddings": hf.max_position_embeddings},
            "adamw": {**{k: optimizer.defaults[k] for k in ("lr", "betas", "eps")},
                      "weight_decay_per_group": [g["weight_decay"] for g in optimizer.param_groups]},
            "tokens_per_step": step_tokens(dm, trainer),
            **run_description(trainer, module),
        }

    def after_fit(self) -> None:
        if not self.trainer.is_global_zero:
            return
        if self._run.report:
            from ..analysis.report import figures_for_run

            report = figures_for_run(self._run.dir)
            print(f"[lmdynamics] figures and report: {report}")
        if self.trainer.global_step >= self.trainer.max_steps:
            mark_finished(self._run.dir, self.trainer.global_step)

    def _write_config(self, run_dir: Path) -> None:
        """The resolved config of this invocation, atomically, as ``config.yaml`` (``config-<sub>.yaml`` for others)."""
        if not _launching_rank_zero():
            return
        name = "config.yaml" if self.subcommand == "fit" else f"config-{self.subcommand}.yaml"
        text = self._parser(self.subcommand).dump(self.config[self.subcommand], skip_none=False)
        write_text_atomic(run_dir / name, text)


def _require_hub_for(cfg) -> None:
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


def _check_run_name(name: str) -> None:
    """The run directory is ``run.root/run.name``: a name is one path component (no separator, not . or ..), so
    that every row of the run's table carries the same name and the run stays where ``run.root`` says."""
    separators = {"/", os.sep, os.altsep or "/"}
    if not name or name in (".", "..") or any(sep in name for sep in separators) or "\0" in name:
        suggestion = "-".join(part for part in name.replace("\\", "/").split("/") if part not in ("", ".", "..")) or "my-run"
        raise ValueError(f"run.name {name!r} must be one directory name (no '/', not '.' or '..'): "
                         f"e.g. --run.name {suggestion}; put runs elsewhere with --run.root")


def _check_run_root(run: RunSpec) -> None:
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
                 parser_kwargs=_parser_kwargs(), args=args)


def main(args=None) -> int:
    """Run the CLI; a user error becomes one line on stderr and exit status 2 (bad input) or 1 (training);
    an interrupted run exits with 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM) after printing
    how to resume it."""
    INTERRUPTED.update(hint=None, signal=None)
    problem = check_config_files(list(sys.argv[1:] if args is None else args))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        build_cli(args)
    except RunFinished as done:
        print(f"[lmdynamics] {done}", file=sys.stderr)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except USER_ERRORS as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before or after training (Lightning handles it during)
        print("error: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exit_:
        if INTERRUPTED["hint"]:  # Lightning's graceful shutdown after Ctrl-C ends with sys.exit(1)
            return 128 + int(INTERRUPTED["signal"] or 2)
        raise exit_
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
