"""How every ``lmdynamics`` verb parses its command line, in one place: a jsonargparse parser with ``--config
FILE.yaml`` (keys as the options, with underscores; options given on the command line win), one flag dialect
(underscores; the older hyphenated spelling of an option is accepted as the same option) and one error path
(bad input is :class:`UsageError`: one line ``error: ...`` on stderr, exit status 2, nothing written).

A verb's module (``lmdynamics.commands.<verb>``) builds its parser with :func:`command_parser` and runs with
:func:`run_command`, which parses, calls the verb's body and maps the errors. Nothing here imports torch.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable

#: the exit status of bad input (argparse's)
BAD_INPUT = 2


class UsageError(ValueError):
    """Bad input of a command (an unknown option or key, a missing file, a malformed value): one line for people."""


def error_line(err: BaseException, argv: list[str], known: Iterable[str], what: str = "config") -> str:
    """jsonargparse's error as one line for people: an unknown key names the file and lists the known keys, a
    missing config file points to ``lmdynamics configs``."""
    text = " ".join(str(err).split())
    m = (re.search(r"Option '([\w.]+)' is not accepted", text) or re.search(r'Key "([\w.]+)" is not expected', text)
         or re.search(r"does not accept option '([\w.]+)'", text)
         or re.search(r"unrecognized arguments: --([\w.]+)", text))
    if m:
        where = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"), "the arguments")
        return f"unknown key(s) ['{m.group(1)}'] in {where}; known keys: {sorted(known)}"
    m = re.search(r"File does not exist: '?([^']+)'?", text)
    if m:
        return f"{what} {m.group(1)} does not exist; the bundled configs are in configs/ (list them with: lmdynamics configs)"
    return text.removeprefix("Parser key ").replace('"', "")


def canonical_flags(argv: list[str]) -> list[str]:
    """Options in the canonical spelling: ``--max-new-tokens 5`` and ``--max-new-tokens=5`` become
    ``--max_new_tokens``; values, short flags and everything after a bare ``--`` are left as they are."""
    out = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + argv[i:]
        name, eq, value = arg.partition("=")
        if re.fullmatch(r"--[A-Za-z][\w.+-]*", name):
            arg = "--" + name[2:].replace("-", "_") + eq + value
        out.append(arg)
    return out


def command_parser(prog: str, description: str | None, config_help: str = "a YAML file whose keys are the options below",
                   config_file: bool = True):
    """The parser of a verb: errors raised (not printed and exited), ``--config`` a YAML file of its options
    (``config_file=False``: the verb reads its ``--config`` file itself, as ``sweep`` does its sweep file)."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False)
    if config_file:
        parser.add_argument("--config", action=ActionConfigFile, help=config_help)
    return parser


def subcommand_parser(parent, subcommands, name: str, help_text: str):
    """A subcommand of ``parent`` (e.g. ``lmdynamics trajectories record``) with its own ``--config``;
    ``subcommands`` is ``parent.add_subcommands(...)``."""
    child = command_parser(f"{parent.prog} {name}", help_text)
    subcommands.add_subcommand(name, child, help=help_text)
    return child


def known_keys(parser) -> list[str]:
    """The option names of a parser (its subcommands' too), for the unknown-key message."""
    keys = [a.dest for a in parser._actions if a.dest not in ("help", "config", "command", "print_config")]
    for action in parser._actions:
        for child in (action.choices.values() if isinstance(action.choices, dict) else ()):
            keys += known_keys(child)
    return sorted(set(keys))


def parse(parser, argv: list[str], what: str = "config"):
    """The namespace of ``argv`` (already in :func:`canonical_flags` spelling); :class:`UsageError` for bad input
    (a malformed ``--config`` file, an unknown option or key, a bad value)."""
    from .config_files import check_config_files

    problem = check_config_files(argv)
    if problem:
        raise UsageError(problem)
    try:
        return parser.parse_args(argv)
    except Exception as err:  # jsonargparse's ArgumentError and friends: one line
        if isinstance(err, UsageError):
            raise
        raise UsageError(error_line(err, argv, known_keys(parser), what)) from None


def run_command(argv: list[str] | None, build: Callable[[], object], body: Callable[[object, list[str]], int],
                errors: tuple[type[BaseException], ...] = (), what: str = "config") -> int:
    """Parse ``argv`` (default: the command line) with the parser ``build()`` returns and run ``body(args,
    argv)``. :class:`UsageError`, FileNotFoundError and the verb's own ``errors`` become one line ``error: ...``
    on stderr and exit status 2; the body's return value is the exit status otherwise."""
    argv = canonical_flags(list(sys.argv[1:] if argv is None else argv))
    try:
        return body(parse(build(), argv, what), argv)
    except (UsageError, FileNotFoundError, *errors) as err:
        if traceback_requested():
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return BAD_INPUT


def given(argv: list[str], option: str) -> bool:
    """Whether ``--option`` is on the command line (not only in a ``--config`` file)."""
    return any(a == f"--{option}" or a.startswith(f"--{option}=") for a in argv)


def traceback_requested() -> bool:
    """``LMDYNAMICS_TRACEBACK=1``: a bad-input error raises with its whole traceback instead of one line (an error
    raised deep inside a library reads as bad input too)."""
    return os.environ.get("LMDYNAMICS_TRACEBACK") == "1"


def one_line(err: BaseException) -> str:
    """An exception's message on one line (its first three non-empty lines joined)."""
    text = str(err).strip() or type(err).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " ".join(lines[:3])
