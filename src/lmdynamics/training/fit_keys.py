"""The keys ``lmdynamics fit`` accepts, known without importing lightning, so that a typo in a config key or an
option answers in a fraction of a second instead of after LightningCLI has built its parser (seconds of CPU).

``fit_keys.json`` holds every section of the training config (``trainer``, ``model.model``, ``data.synthetic``,
...) with the names inside it, as LightningCLI's ``--print_config`` shows them; regenerate it with
``.venv/bin/python -m lmdynamics.training.fit_keys`` after adding a setting (``tests/test_fit_keys.py`` fails while it is
stale). A key is refused here only where the answer is certain: a name that is not in a section the file knows.
A key under a setting (``trainer.strategy.class_path``, a dict-valued or optional option) is left to the parser.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import yaml

KEYS_FILE = Path(__file__).with_name("fit_keys.json")
#: Options of LightningCLI itself rather than settings of the config.
CLI_OPTIONS = {"config", "print_config", "help", "h"}


def sections_of(tree: dict, prefix: str = "") -> dict[str, list[str]]:
    """Every non-empty mapping of a printed config, by dotted path ("" = the top level): its names, sorted."""
    out = {prefix: sorted(tree)}
    for name, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(sections_of(value, f"{prefix}.{name}" if prefix else name))
    return out


def parser_sections() -> dict[str, list[str]]:
    """The sections of the real training parser (imports lightning): ``fit --print_config`` with no config."""
    import contextlib
    import io

    from .cli import build_cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            build_cli(["fit", "--print_config"])
        except SystemExit:
            pass
    return sections_of(yaml.safe_load(out.getvalue()))


def _paths(mapping: dict, prefix: str = "") -> list[str]:
    """The dotted key paths of a YAML mapping (its leaves and the keys whose values are not mappings)."""
    paths = []
    for name, value in mapping.items():
        path = f"{prefix}.{name}" if prefix else str(name)
        paths += _paths(value, path) if isinstance(value, dict) and value else [path]
    return paths


def _flag_paths(argv: list[str]) -> list[str]:
    """The dotted keys of the ``--key value`` / ``--key=value`` options of a command line (LightningCLI's own
    options and the subcommand excepted)."""
    keys = []
    for arg in argv:
        if arg.startswith("--") and len(arg) > 2:
            name = arg[2:].split("=", 1)[0].removesuffix("+")
            if name not in CLI_OPTIONS:
                keys.append(name)
    return keys


def _check(path: str, sections: dict[str, list[str]]) -> tuple[str, str, list[str]] | None:
    """(the unknown name's full path, its section, the section's names) when ``path`` names nothing, else None."""
    section = ""
    for name in path.split("."):
        names = sections.get(section)
        if names is None:  # under a setting, not a section: the parser decides
            return None
        if name not in names:
            return (f"{section}.{name}" if section else name), section, names
        section = f"{section}.{name}" if section else name
    return None


def unknown_key(argv: list[str], sections: dict[str, list[str]] | None = None) -> str | None:
    """One line for the first key of the ``--config`` files or options of a training command line that the
    training config does not have (None when every key is known or left to the parser)."""
    from ..config_files import config_paths

    sections = sections if sections is not None else json.loads(KEYS_FILE.read_text())
    pending = [Path(p) for p in config_paths(argv)]
    while pending:
        path = pending.pop(0)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue  # a missing or malformed file is named by the config-file check and the parser
        if not isinstance(data, dict):
            continue
        included = data.pop("config", None)  # a config file may include others (jsonargparse), relative to it
        for name in [included] if isinstance(included, str) else included or []:
            pending.append(path.parent / name if not Path(name).is_absolute() else Path(name))
        for key in _paths(data):
            found = _check(key, sections)
            if found:
                return _line(found, f"unknown key '{found[0]}' in {path}", "")
    for key in _flag_paths(argv):
        found = _check(key, sections)
        if found:
            return _line(found, f"unknown option --{key}", "--")
    return None


def _line(found: tuple[str, str, list[str]], what: str, dashes: str) -> str:
    """The error: what is unknown, the closest name of its section, the section's names (up to 16)."""
    full, section, names = found
    close = difflib.get_close_matches(full.rsplit(".", 1)[-1], names, n=1)
    guess = f"; did you mean {dashes}{(section + '.') if section else ''}{close[0]}?" if close else ""
    listed = f"the keys of {section or 'the top level'}: {', '.join(names)}; " if len(names) <= 16 else ""
    return f"{what}{guess} ({listed}every key: lmdynamics fit --print_config)"


if __name__ == "__main__":
    KEYS_FILE.write_text(json.dumps(parser_sections(), indent=1, sort_keys=True) + "\n")
    print(f"written: {KEYS_FILE}")
