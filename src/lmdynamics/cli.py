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

Every subcommand reads YAML configs and flags through jsonargparse; ``lmdynamics SUBCOMMAND --help`` shows
its keys. The scripts under train/ and analysis/ and the make targets are thin wrappers over the same code.
"""

from __future__ import annotations

import sys
from pathlib import Path


def config_root() -> Path:
    """The bundled ``configs/`` directory: package data of an installed wheel, and in a checkout the link
    ``src/lmdynamics/configs`` -> ``configs/`` (resolved, so paths read as the checkout's own)."""
    return (Path(__file__).parent / "configs").resolve()


def leading_paragraph(text: str) -> str:
    """The prose of a YAML file's leading comment: its ``#`` lines up to the first blank, indented (a command
    line) or non-comment line, joined into one line."""
    prose = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        body = line[1:]
        if not body.strip() or body.startswith("  "):
            break
        prose.append(body.strip())
    return " ".join(prose)


ABBREVIATIONS = {"e.g", "i.e", "sec", "al", "cf", "vs", "fig", "eq"}  # a full stop after these ends no sentence


def first_sentence(text: str) -> str:
    """``text`` up to its first full stop (., ! or ?) outside parentheses that is followed by a space and not by a
    digit nor after an abbreviation: whole sentences only ("sec. 1", "(Yang et al. 2018)" end none). A paragraph
    ending in a colon (it introduces commands) ends in a full stop instead."""
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch not in ".!?" or depth > 0:
            continue
        after = text[i + 1:]
        before = text[:i].split()[-1].lstrip("(").lower() if text[:i].split() else ""
        if not after.strip() or (after[0].isspace() and not after.lstrip()[0].isdigit() and before not in ABBREVIATIONS):
            return text[: i + 1]
    return text[:-1] + "." if text.endswith(":") else text


def _shown(path: Path, root: Path) -> str:
    """``configs/...`` where the working directory holds these configs (a checkout), else the absolute path
    (an installed wheel's package data), so that every printed path works as ``--config`` from here."""
    if (Path.cwd() / "configs").resolve() == root:
        return path.relative_to(root.parent).as_posix()
    return path.as_posix()


def describe_configs(root: Path | None = None) -> list[str]:
    """One line per bundled YAML config: its path and the first sentence of its leading comment."""
    root = root or config_root()
    paths = sorted(root.rglob("*.yaml"))
    names = [_shown(path, root) for path in paths]
    width = max(map(len, names), default=0)
    return [f"{name:<{width}}  {first_sentence(leading_paragraph(path.read_text()))}" for name, path in zip(names, paths)]


def configs_main(argv: list[str] | None = None) -> int:
    root = config_root()
    if not root.is_dir():
        print(f"error: no configs directory at {root}; reinstall the package (pip install lmdynamics) or run it from a checkout", file=sys.stderr)
        return 2
    print("\n".join(describe_configs(root)))
    return 0


def metrics_main(argv: list[str] | None = None) -> int:
    """``lmdynamics metrics``: every measurement of the catalogue, one line each (name, what it reads, its figure
    family, whether the run report draws that family's figures for it and how compare draws it, label and
    description), so that no list of metrics has to be kept by hand."""
    from lmdynamics import catalogue

    if argv:
        print(f"error: lmdynamics metrics takes no arguments, got {' '.join(argv)}", file=sys.stderr)
        return 2
    rows = [(m.name, m.reads if m.applies_to == "all" else f"{m.reads} ({m.applies_to})",
             f"family {m.family or '-'}" + (" (report figures)" if m.figures else "") + (f", compare {m.compare}" if m.compare else ""),
             m.axis_label() + (f": {m.description}" if m.description else ""))
            for m in catalogue.CATALOGUE.values()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)) + "  " + row[3])
    return 0


#: name -> (the command's ``module:function`` taking the arguments after the name, what it does). ``fit`` and
#: ``validate`` are LightningCLI subcommands: the training CLI gets the name too.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("lmdynamics.training.cli:main", "train a model (configs/train/*.yaml)"),
    "validate": ("lmdynamics.training.cli:main", "evaluate a checkpoint of a run into <run>/evaluations/"),
    "analyze": ("lmdynamics.offline.cli:main", "offline analysis of checkpoints (configs/analysis/*.yaml)"),
    "report": ("lmdynamics.report.commands:report_main", "figures and report.md of a tidy table"),
    "convergence": ("lmdynamics.report.commands:convergence_main", "CKA-to-final and convergence summary of a training run"),
    "trajectories": ("lmdynamics.trajectories.cli:main", "per-token loss trajectories: record, report, score"),
    "contrastive": ("lmdynamics.trajectories.contrastive_cli:main", "contrastive text from a small and a large checkpoint"),
    "saturation": ("lmdynamics.saturation.commands.saturation:main", "saturation of eval or loss curves: saturation.csv, report, figures"),
    "evaluate": ("lmdynamics.saturation.commands.evaluate:main", "lm-eval (or a corpus loss) at every checkpoint of a run or hub revisions"),
    "lowrank-head": ("lmdynamics.saturation.commands.lowrank_head:main", "loss of a rank-constrained head on a frozen checkpoint, over a rank grid"),
    "werror": ("lmdynamics.saturation.commands.werror:main", "W-error curve of a tokenised corpus's n-gram next-token matrix"),
    "sweep": ("lmdynamics.sweep:main", "a grid of training runs, local workers or printed commands"),
    "compare": ("lmdynamics.report.compare_report:main", "one report across runs from their tidy tables"),
    "generate": ("lmdynamics.generate:main", "sample text from a checkpoint (temperature, top-p, seed)"),
    "runs": ("lmdynamics.runs:main", "the runs under a root: model, steps, status, validation loss, size"),
    "configs": ("lmdynamics.cli:configs_main", "list the bundled configs"),
    "metrics": ("lmdynamics.cli:metrics_main", "list every measurement of the catalogue (live, offline, figures)"),
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
