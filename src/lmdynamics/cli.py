"""``lmdynamics``: one command for everything the toolkit does.

    lmdynamics fit --config configs/train/demo.yaml          train (LightningCLI; --help lists every key)
    lmdynamics validate --config ... --ckpt_path last         evaluate a checkpoint into <run>/evaluations/
    lmdynamics analyze --config configs/analysis/demo-run.yaml   offline analysis of checkpoints
    lmdynamics report --table runs/demo                       figures and report of any tidy table
    lmdynamics convergence runs/demo                          CKA-to-final of a run from its activations
    lmdynamics generate --checkpoint runs/demo --prompt TEXT  sample text from a checkpoint
    lmdynamics runs [ROOT]                                    the runs under ROOT (default runs/), one line each
    lmdynamics configs                                        the bundled configs, one line each
    lmdynamics metrics                                        every measurement of the catalogue, one line each

Every verb is one module of ``lmdynamics.commands`` and parses the same way (``lmdynamics.arguments``):
jsonargparse, ``--config FILE.yaml``, options with underscores, bad input as one line and exit status 2;
``lmdynamics VERB --help`` shows its keys. The scripts under train/ and analysis/ are this command with their
verb, one line each; the make targets call it.
"""

from __future__ import annotations

import sys

#: name -> (the verb's ``module:function`` taking the arguments after the name, what it does): one module per verb
#: in ``lmdynamics.commands``. ``fit`` and ``validate`` are LightningCLI subcommands: the training CLI gets the name too.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("lmdynamics.commands.fit:main", "train a model (configs/train/*.yaml)"),
    "validate": ("lmdynamics.commands.fit:main", "evaluate a checkpoint of a run into <run>/evaluations/"),
    "sweep": ("lmdynamics.commands.sweep:main", "a grid of training runs, local workers or printed commands"),
    "launch": ("lmdynamics.commands.launch:main", "print a SLURM script or a torchrun command for multi-GPU training"),
    "analyze": ("lmdynamics.commands.analyze:main", "offline analysis of checkpoints (configs/analysis/*.yaml)"),
    "report": ("lmdynamics.commands.report:main", "figures and report.md of a tidy table"),
    "convergence": ("lmdynamics.commands.convergence:main", "CKA-to-final and convergence summary of a training run"),
    "compare": ("lmdynamics.commands.compare:main", "one report across runs from their tidy tables"),
    "saturation": ("lmdynamics.commands.saturation:main", "saturation of eval or loss curves: saturation.csv, report, figures"),
    "evaluate": ("lmdynamics.commands.evaluate:main", "lm-eval (or a corpus loss) at every checkpoint of a run or hub revisions"),
    "werror": ("lmdynamics.commands.werror:main", "W-error curve of a tokenised corpus's n-gram next-token matrix"),
    "lowrank-head": ("lmdynamics.commands.lowrank_head:main", "loss of a rank-constrained head on a frozen checkpoint, over a rank grid"),
    "trajectories": ("lmdynamics.commands.trajectories:main", "per-token loss trajectories: record, report, score, run"),
    "contrastive": ("lmdynamics.commands.contrastive:main", "contrastive text from a small and a large checkpoint"),
    "generate": ("lmdynamics.commands.generate:main", "sample text from a checkpoint (temperature, top-p, seed)"),
    "runs": ("lmdynamics.commands.runs:main", "the runs under a root: model, steps, status, validation loss, size"),
    "configs": ("lmdynamics.commands.configs:main", "list the bundled configs"),
    "metrics": ("lmdynamics.commands.metrics:main", "list every measurement of the catalogue (what it reads, its figures, its definition)"),
}
_TAKES_NAME = {"fit", "validate"}


def register(name: str, target: str, help_text: str) -> None:
    """Add a subcommand: ``target`` is ``module:function``, a ``main(argv) -> int``."""
    SUBCOMMANDS[name] = (target, help_text)


def _run(name: str, argv: list[str]) -> int:
    import importlib

    module, function = SUBCOMMANDS[name][0].split(":")
    if name in _TAKES_NAME:  # LightningCLI reads sys.argv itself when it is the command line (no warning then)
        return getattr(importlib.import_module(module), function)(None if argv == sys.argv[1:] else argv)
    return getattr(importlib.import_module(module), function)(argv[1:])


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, (_, text) in SUBCOMMANDS.items())
    return f"usage: lmdynamics SUBCOMMAND [ARGS]\n\nsubcommands:\n{rows}\n\nlmdynamics SUBCOMMAND --help lists its options."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] not in SUBCOMMANDS:
        print(f"error: unknown subcommand {argv[0]!r}; choose from {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    return _run(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main())
