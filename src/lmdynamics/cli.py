"""``lmdynamics``: one command for everything the toolkit does.

    lmdynamics fit --config configs/train/demo.yaml          train (LightningCLI; --help lists every key)
    lmdynamics validate --config ... --ckpt_path last         evaluate a checkpoint into <run>/evaluations/
    lmdynamics analyze --config configs/analysis/demo-run.yaml   offline analysis of checkpoints
    lmdynamics report --table runs/demo                       figures and report of any tidy table
    lmdynamics convergence runs/demo                          CKA-to-final of a run from its activations
    lmdynamics configs                                        the bundled configs, one line each

Every subcommand reads YAML configs and flags through jsonargparse; ``lmdynamics SUBCOMMAND --help`` shows
its keys. The scripts under train/ and analysis/ and the make targets are thin wrappers over the same code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


def _training(argv: list[str]) -> int:
    from lmdynamics.training.cli import main

    return main(argv)


def _analyze(argv: list[str]) -> int:
    from lmdynamics.analysis.cli import main

    return main(argv[1:])


def _report(argv: list[str]) -> int:
    from lmdynamics.analysis.commands import report_main

    return report_main(argv[1:])


def _convergence(argv: list[str]) -> int:
    from lmdynamics.analysis.commands import convergence_main

    return convergence_main(argv[1:])


def _trajectories(argv: list[str]) -> int:
    from lmdynamics.trajectories.cli import main

    return main(argv[1:])


def _contrastive(argv: list[str]) -> int:
    from lmdynamics.trajectories.contrastive_cli import main

    return main(argv[1:])


def _script(name: str) -> Callable[[list[str]], int]:
    """A command whose ``main(argv)`` lives in one of the project's analysis scripts (``analysis/NAME.py``)."""

    def run(argv: list[str]) -> int:
        import importlib.util

        path = Path(__file__).resolve().parents[2] / "analysis" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"lmdynamics_script_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.main(argv[1:])

    return run


def _library(module: str) -> Callable[[list[str]], int]:
    import importlib

    return importlib.import_module(module).main


def config_root() -> Path:
    """The project's ``configs/`` directory (beside ``src/`` in a checkout)."""
    return Path(__file__).resolve().parents[2] / "configs"


def describe_configs(root: Path | None = None) -> list[str]:
    """One line per bundled YAML config: its path and the first line of its leading comment."""
    root = root or config_root()
    lines = []
    for path in sorted(root.rglob("*.yaml")):
        first = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        lines.append(f"{path.relative_to(root.parent).as_posix():<42} {first}")
    return lines


def _configs(argv: list[str]) -> int:
    root = config_root()
    if not root.is_dir():
        print(f"error: no configs directory at {root}; run lmdynamics from a checkout of the project", file=sys.stderr)
        return 2
    print("\n".join(describe_configs(root)))
    return 0


SUBCOMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "fit": (_training, "train a model (configs/train/*.yaml)"),
    "validate": (_training, "evaluate a checkpoint of a run into <run>/evaluations/"),
    "analyze": (_analyze, "offline analysis of checkpoints (configs/analysis/*.yaml)"),
    "report": (_report, "figures and report.md of a tidy table"),
    "convergence": (_convergence, "CKA-to-final and convergence summary of a training run"),
    "trajectories": (_trajectories, "per-token loss trajectories: record, report, score"),
    "contrastive": (_contrastive, "contrastive text from a small and a large checkpoint"),
    "saturation": (_script("saturation"), "saturation of eval or loss curves: saturation.csv, report, figures"),
    "werror": (_script("werror"), "W-error curve of a tokenised corpus's n-gram next-token matrix"),
    "sweep": (lambda argv: _library("lmdynamics.sweep")(argv[1:]), "a grid of training runs, local workers or printed commands"),
    "compare": (lambda argv: _library("lmdynamics.compare")(argv[1:]), "one report across runs from their tidy tables"),
    "configs": (_configs, "list the bundled configs"),
}


def register(name: str, run: Callable[[list[str]], int], help_text: str) -> None:
    """Add a subcommand (``run`` gets the whole argument list, its own name first)."""
    SUBCOMMANDS[name] = (run, help_text)


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
    return SUBCOMMANDS[argv[0]][0](argv)


if __name__ == "__main__":
    sys.exit(main())
