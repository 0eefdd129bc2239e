"""``docs/commands.md``: every option of every ``lmdynamics`` verb with its default and its ``--help`` text, written
from the verbs' own parsers (``SUBCOMMANDS`` walked, subcommands included), so that the reference cannot drift
from what the commands accept. Regenerate it with ``.venv/bin/python -m lmdynamics.cli_reference`` after changing
an option; ``tests/test_cli_reference.py`` fails while it is stale. ``fit`` and ``validate`` are LightningCLI's:
their keys are the training config's (``lmdynamics fit --help``, ``docs/outputs.md``), not listed here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from .cli import SUBCOMMANDS

PATH = Path(__file__).resolve().parents[2] / "docs" / "commands.md"
#: the LightningCLI verbs: pointed to, not listed
TRAINING = ("fit", "validate")
_HIDDEN = ("help", "config", "print_config")  # every verb's: said once above the tables


def _cell(text) -> str:
    """One Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(action) -> str:
    """The default as a config file would write it (JSON), or nothing where there is none."""
    if action.default is None or action.default == argparse.SUPPRESS or action.nargs == 0:
        return ""
    return f"`{_cell(json.dumps(action.default))}`"


def _name(action) -> str:
    if not action.option_strings:
        return f"`{action.dest.upper()}` (positional)"
    return ", ".join(f"`{s}`" for s in action.option_strings if not s.endswith("+"))


def _what(action) -> str:
    """The help text, and the choices where the option has a fixed set."""
    choices = f"one of {', '.join(map(str, action.choices))}" if action.choices else ""
    return "; ".join(part for part in (action.help or "", choices) if part)


def _subcommands(parser) -> dict:
    return next((a.choices for a in parser._actions if isinstance(a.choices, dict) and not a.option_strings), {})


def parser_section(parser, title: str, level: int = 2, summary: str = "") -> list[str]:
    """The Markdown of one parser: its title, description (else ``summary``) and a table of its options (then its
    subcommands')."""
    lines = [f"{'#' * level} `{title}`", ""]
    if parser.description or summary:
        lines += [" ".join((parser.description or summary).split()), ""]
    rows = [a for a in parser._actions if a.dest not in _HIDDEN and "ConfigLoad" not in type(a).__name__
            and not isinstance(a.choices, dict)]
    if rows:
        lines += ["| option | default | what it is |", "|---|---|---|"]
        lines += [f"| {_name(a)} | {_default(a)} | {_cell(_what(a))} |" for a in rows]
        lines.append("")
    for name, child in _subcommands(parser).items():
        lines += parser_section(child, f"{title} {name}", level + 1)
    return lines


def render() -> str:
    """The whole reference, as written to ``docs/commands.md``."""
    lines = ["# Command reference", "",
             "Every option of every `lmdynamics` verb, with its default and its `--help` text. Generated from the "
             "commands' parsers by `.venv/bin/python -m lmdynamics.cli_reference` (do not edit by hand). Every option "
             "can also be a key of a YAML file given with `--config`; the command line wins.", "",
             f"`lmdynamics {' / '.join(TRAINING)}`: LightningCLI's, with the training config's keys "
             "(`lmdynamics fit --help`, `configs/train/*.yaml`).", ""]
    for verb, (target, summary) in SUBCOMMANDS.items():
        if verb in TRAINING:
            continue
        parser = importlib.import_module(target.split(":")[0]).build_parser()
        lines += parser_section(parser, f"lmdynamics {verb}", summary=f"{summary[0].upper()}{summary[1:]}.")
    return "\n".join(lines).rstrip("\n") + "\n"


def write(path: Path = PATH) -> Path:
    """Write the reference atomically (a temporary file renamed over the old one)."""
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(render())
    tmp.replace(path)
    return path


if __name__ == "__main__":
    print(f"written {write(Path(sys.argv[1]) if len(sys.argv) > 1 else PATH)}")
