"""The ``lmdynamics`` command as it works when printed and pasted into a new shell: the console script beside
this interpreter, by its absolute path (no activated virtualenv, no PYTHONPATH, any working directory needed).

Everything the package prints or runs as a command (the resume hint, ``sweep --print_commands`` and its runs,
``lmdynamics launch``'s torchrun line and SLURM script) is built here, never a script path of the checkout.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path


def lmdynamics_command(verb: str, python: str | None = None) -> list[str]:
    """``[<venv>/bin/lmdynamics, verb]``: the console script beside ``python`` (default: this interpreter;
    absolute), else ``[<python>, -m, lmdynamics.cli, verb]``. The interpreter's path is kept as it is (a venv's
    ``bin/python`` is a link; resolving it leaves the venv)."""
    python = os.path.abspath(python or sys.executable)
    script = Path(python).with_name("lmdynamics")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script), verb]
    return [python, "-m", "lmdynamics.cli", verb]


def interpreter_of(command: list[str]) -> str:
    """The Python interpreter that runs a :func:`lmdynamics_command` (the one beside its console script)."""
    return command[0] if command[1:2] == ["-m"] else str(Path(command[0]).with_name("python"))


def in_this_directory(args: list[str]) -> str:
    """``cd <cwd> && <args>``: a command whose relative paths (configs, run.root) are the ones given here."""
    return f"cd {shlex.quote(os.getcwd())} && {shlex.join(args)}"
