"""``lmdynamics configs``: the bundled YAML configs, one line each (path and the first sentence of its leading
comment). The configs are package data (``src/lmdynamics/configs`` links to ``configs/`` in a checkout)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..arguments import command_parser, run_command


def config_root() -> Path:
    """The bundled ``configs/`` directory: package data of an installed wheel, and in a checkout the link
    ``src/lmdynamics/configs`` -> ``configs/`` (resolved, so paths read as the checkout's own)."""
    return (Path(__file__).parents[1] / "configs").resolve()


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


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, build_parser, _configs)


def build_parser():
    return command_parser("lmdynamics configs", "the bundled configs (train, analysis, sweeps), one line each: path and what it is for")


def _configs(args, argv) -> int:
    root = config_root()
    if not root.is_dir():
        print(f"error: no configs directory at {root}; reinstall the package (pip install lmdynamics) or run it from a checkout", file=sys.stderr)
        return 2
    print("\n".join(describe_configs(root)))
    return 0
