"""``docs/commands.md`` is the verbs' own parsers written out (``lmdynamics.cli_reference``): every option of every
verb with its default and its help text, so that the reference a user reads is what the commands accept."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from lmdynamics import cli_reference
from lmdynamics.cli import SUBCOMMANDS


def test_the_reference_is_the_parsers():
    """Stale after an option, default or help text changed: regenerate with
    `.venv/bin/python -m lmdynamics.cli_reference`."""
    assert (Path(__file__).resolve().parents[1] / "docs" / "commands.md").read_text() == cli_reference.render()


@pytest.mark.parametrize("verb", sorted(set(SUBCOMMANDS) - set(cli_reference.TRAINING)))
def test_every_option_of_every_verb_has_its_row_with_default_and_help(verb):
    """Walked from the parser here, independently of the renderer: each option's row names it, shows its default as
    JSON (none for a flag or a None default) and its help text on one line."""
    import argparse
    import json

    text = cli_reference.render()
    parser = importlib.import_module(SUBCOMMANDS[verb][0].split(":")[0]).build_parser()
    assert f"## `lmdynamics {verb}`" in text
    for action in parser._actions:
        if action.dest in ("help", "config", "print_config") or not action.option_strings or action.help is None:
            continue
        if "ConfigLoad" in type(action).__name__:
            continue
        default = "" if action.default in (None, argparse.SUPPRESS) or action.nargs == 0 else \
            f"`{json.dumps(action.default)}`"
        described = " ".join(action.help.split()).replace("|", "\\|")  # a pipe in a help text is escaped in its cell
        row = f"| `{action.option_strings[0]}` | {default} | {described}"
        assert row in text, row


def test_the_reference_is_written_atomically_where_asked(tmp_path):
    out = cli_reference.write(tmp_path / "commands.md")
    assert out.read_text() == cli_reference.render() and [p.name for p in tmp_path.iterdir()] == ["commands.md"]


def test_a_help_text_with_a_pipe_or_several_lines_stays_one_table_cell():
    from lmdynamics.arguments import command_parser

    parser = command_parser("lmdynamics x", "What x does.")
    parser.add_argument("--mode", type=str, default="a|b", help="a | b,\n  or c")
    lines = cli_reference.parser_section(parser, "lmdynamics x")
    assert lines[:4] == ["## `lmdynamics x`", "", "What x does.", ""]
    assert "| `--mode` | `\"a\\|b\"` | a \\| b, or c |" in lines  # GitHub tables read \\| as | in code too
