"""The LightningCLI of ``lmdynamics fit`` and ``validate``: YAML configs and flags into model, data, trainer and
callbacks, in the order that keeps the run directory whole (``lmdynamics.commands.fit`` runs it and maps its
errors to one line).

The steps, each in its own module: the config's checks (``config_checks``), where this invocation writes
(``run_directory``), the loggers and callbacks (``assembly``), the dry run (``dry_run``). The run lives in
``<run.root>/<run.name>``: the resolved config (config.yaml), run.json, HF checkpoints, Lightning's resume
checkpoint (lightning/last.ckpt), TensorBoard and CSV logs, and the tidy metrics table.
"""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from ..callbacks.convergence import ActivationConvergence
from ..callbacks.head_rank import HeadRank
from ..callbacks.hf_checkpoints import HFCheckpoints
from ..callbacks.probe import Probe
from ..callbacks.progress import ProgressLines
from ..callbacks.trajectories import TrajectoryRecorder
from ..callbacks.weight_rank import WeightRank
from ..data.datamodule import TextDataModule
from .assembly import build_loggers, trainer_settings, wire_measurements
from .config_checks import check_config, set_accumulation
from .dry_run import plan
from .module import LMModule
from .resume import read_checkpoint_state
from .run_directory import plan_invocation
from .run_spec import RunSpec
from .run_status import mark_finished

SUBCOMMANDS = {"fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
               "validate": {"model", "dataloaders", "datamodule"}}


def _parser_kwargs() -> dict:
    # no option prefixes (argparse would take --trainer.max_step for --trainer.max_steps), in every subparser
    strict = {"allow_abbrev": False}
    return {"exit_on_error": False, **strict, **{sub: dict(strict) for sub in SUBCOMMANDS}}


class LMCLI(LightningCLI):
    def __init__(self, *args, write_report=None, **kwargs):
        #: ``run_dir -> report path``: the report layer's writer, handed down by the command (``commands/fit.py``),
        #: so training imports nothing from the report layer; None draws no report.
        self.write_report = write_report
        super().__init__(*args, **kwargs)

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
        run = check_config(cfg, self.subcommand)
        self._invocation = plan_invocation(cfg, run, self.subcommand, self._finish_completed_run)
        set_accumulation(cfg)
        self._run = run

    def _finish_completed_run(self, cfg, run: RunSpec) -> None:
        """The work done after the last step (CKA-to-final, table compaction, report), again and idempotently:
        a run killed during it is complete afterwards, a complete run is unchanged."""
        from .. import store
        from ..cka_to_final import finalize_run

        conv = cfg.convergence
        if conv.enabled and conv.store_activations and (run.dir / "activations").is_dir():
            finalize_run(run.dir, threshold=conv.threshold, debiased=conv.debiased)
        store.compact(store.table_path(run.dir))
        if run.report and self.write_report is not None:
            print(f"[lmdynamics] figures and report: {self.write_report(run.dir)}")

    def after_instantiate_classes(self) -> None:
        """Check data and model against each other before anything is written to the run directory."""
        self.datamodule.prepare()
        spec = self.model.resolve_spec(self.datamodule)
        for callback in self.trainer.callbacks:
            if hasattr(callback, "check_config"):
                callback.check_config(self.datamodule, spec)
        if self._run.dry_run:
            return
        self._invocation.prepare_output()
        self._invocation.write_config(self._parser(self.subcommand).dump(self.config[self.subcommand], skip_none=False))

    def instantiate_trainer(self, **kwargs):
        trainer_cfg = self._get(self.config_init, "trainer", default={})
        settings = trainer_settings(trainer_cfg, self._invocation, build_loggers(self._invocation, self.model), **kwargs)
        extra = [self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys]
        wire_measurements(extra, self._get(self.config_init, "probe"), self._get(self.config_init, "checkpoints"))
        return self._instantiate_trainer(settings, extra)

    def _run_subcommand(self, subcommand: str) -> None:
        if self._run.dry_run:
            print(json.dumps(self.plan(), indent=1))
            return
        try:
            super()._run_subcommand(subcommand)
        finally:  # a failed evaluation leaves no partial output
            self._invocation.discard_partial()

    def after_validate(self) -> None:
        if self.trainer.is_global_zero:
            final = self._invocation.publish_evaluation()
            print(f"[lmdynamics] validation of step {self._invocation.eval_step} written to {final}")

    def plan(self) -> dict:
        """What this config builds, on the meta device: the architecture, optimiser, schedule and batch."""
        return plan(self.model, self.trainer, self.datamodule, self._run.dir)

    def after_fit(self) -> None:
        if not self.trainer.is_global_zero:
            return
        if self._run.report and self.write_report is not None:
            print(f"[lmdynamics] figures and report: {self.write_report(self._run.dir)}")
        if self.trainer.global_step >= self.trainer.max_steps:
            mark_finished(self._run.dir, self.trainer.global_step)


def build_cli(args=None, write_report=None) -> LMCLI:
    """Parse ``args`` (default: the command line) and run the subcommand; the CLI object keeps model and trainer.
    ``write_report(run_dir)`` draws the run's report at the end of fit (``report.run_report.figures_for_run``)."""
    return LMCLI(LMModule, TextDataModule, save_config_callback=None, seed_everything_default=1234,
                 parser_kwargs=_parser_kwargs(), args=args, write_report=write_report)
