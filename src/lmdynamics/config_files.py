"""The YAML files given with ``--config``, read before the command parser sees them: an empty file, a file that
is not a mapping of settings, or malformed YAML becomes one line naming the file (and the line), not the
parser's bare "Unexpected config" or a YAML traceback without a file name."""

from __future__ import annotations

from pathlib import Path

import yaml


def config_paths(argv: list[str]) -> list[str]:
    """The values of every ``--config PATH`` and ``--config=PATH`` in ``argv``."""
    paths = []
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            paths.append(argv[i + 1])
        elif arg.startswith("--config="):
            paths.append(arg.split("=", 1)[1])
    return paths


def config_file_problem(path: str | Path) -> str | None:
    """What is wrong with one config file, or None (also None for a missing file: the parser names that)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
        return f"config file {where}: malformed YAML ({problem}); fix the YAML there"
    except UnicodeDecodeError:
        return f"config file {path} is not a text file; give a YAML file of settings"
    if data is None:
        return f"config file {path} is empty; give a YAML mapping of settings (the bundled ones: lmdynamics configs)"
    if not isinstance(data, dict):
        return (f"config file {path} holds a {type(data).__name__}, not a mapping of settings (key: value lines); "
                "see the bundled ones: lmdynamics configs")
    return None


def check_config_files(argv: list[str]) -> str | None:
    """The first problem of any ``--config`` file in ``argv`` (None if there is none)."""
    for path in config_paths(argv):
        problem = config_file_problem(path)
        if problem:
            return problem
    return None
