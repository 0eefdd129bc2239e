"""Every verb of ``lmdynamics`` (the SUBCOMMANDS table, walked: a verb added there is checked here with no other
change) parses the same way: ``--help`` answers, ``--config FILE.yaml`` sets its options, an unknown key (in the
file or on the command line) is one line ``error: ...`` with exit status 2 and nothing written, and every option
answers to both spellings (``--max_new_tokens`` and ``--max-new-tokens``). The scripts in ``train/`` and
``analysis/`` are each one line: the same verb of ``lmdynamics.cli``."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
import yaml

from lmdynamics.arguments import UsageError, canonical_flags, parse
from lmdynamics.cli import SUBCOMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
#: LightningCLI's verbs: their parser is the training CLI's (checked with --print_config below)
TRAINING = {"fit", "validate"}
PARSED_VERBS = sorted(set(SUBCOMMANDS) - TRAINING)
#: what a verb needs on the command line besides the option under test (its required arguments)
REQUIRED = {
    "analyze": [],
    "compare": ["runs/a", "--out", "OUT"],
    "contrastive": ["--small", "s", "--large", "l", "--prompts", "p.txt", "--out", "OUT"],
    "convergence": ["runs/a"],
    "evaluate": ["--run", "runs/a", "--out", "OUT"],
    "generate": ["--checkpoint", "runs/a", "--prompt", "hello"],
    "launch": ["torchrun"],
    "lowrank-head": ["--checkpoint", "ckpt", "--out", "OUT"],
    "report": ["--table", "runs/a"],
    "saturation": [],
    "sweep": ["--config", "sweep.yaml"],
    "trajectories": ["report", "--store", "s", "--out", "OUT"],
    "werror": ["--out", "OUT"],
    "runs": [],
    "configs": [],
    "metrics": [],
}


def _module(verb: str):
    return importlib.import_module(SUBCOMMANDS[verb][0].split(":")[0])


def _parser_and_prefix(verb: str):
    """The parser whose options are checked, and the argv prefix that selects it (a subcommand's name)."""
    parser = _module(verb).build_parser()
    args = REQUIRED[verb]
    for action in parser._actions:  # a verb with subcommands: the one REQUIRED names
        if isinstance(action.choices, dict) and args and args[0] in action.choices:
            return action.choices[args[0]], parser, [args[0]]
    return parser, parser, []


def _value(top, prefix: list[str], required: list[str], action) -> list[str]:
    """A command-line value the option accepts (nothing for a flag): its first choice, else the first of a few
    candidates its type takes."""
    if action.nargs == 0:
        return []
    if action.choices:
        return [str(list(action.choices)[0])]
    for candidate in ("3", "0.5", "x", "[x]", "true"):
        try:
            parse(top, [*prefix, *required, action.option_strings[0], candidate])
            return [candidate]
        except UsageError:
            continue
    raise AssertionError(f"no value found for {action.option_strings[0]}")


def _options(parser) -> list:
    """The verb's own options (not --help, --config, jsonargparse's --print_* nor a section's config-file option)."""
    return [a for a in parser._actions if a.option_strings and a.dest not in ("help", "config")
            and not a.dest.startswith("print_") and "ConfigLoad" not in type(a).__name__
            and any(s.startswith("--") for s in a.option_strings)]


def _excluded_by(parser, required: list[str]) -> set[str]:
    """Options in a mutually exclusive group with one the required arguments give (``--hub`` beside ``--run``)."""
    out = set()
    for group in parser._mutually_exclusive_groups:
        strings = {s for a in group._group_actions for s in a.option_strings}
        if strings & set(required):
            out |= strings - set(required)
    return out


def test_every_verb_is_a_module_of_lmdynamics_commands_with_a_main():
    for verb, (target, _) in SUBCOMMANDS.items():
        module, function = target.split(":")
        assert module.startswith("lmdynamics.commands.") and function == "main", verb
        assert callable(getattr(importlib.import_module(module), function))
    assert set(PARSED_VERBS) == set(REQUIRED), "a new verb: add its required arguments to REQUIRED"


@pytest.mark.parametrize("verb", list(SUBCOMMANDS))
def test_help_answers(verb, capsys):
    with pytest.raises(SystemExit) as done:
        main([verb, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--config" in out


@pytest.mark.parametrize("verb", PARSED_VERBS)
def test_help_writes_options_with_underscores(verb, capsys):
    parser, _, _ = _parser_and_prefix(verb)
    for action in _options(parser):
        long = [s for s in action.option_strings if s.startswith("--")]
        assert all("-" not in s[2:] for s in long), f"{verb}: {long} (the canonical spelling has underscores)"


@pytest.mark.parametrize("verb", PARSED_VERBS)
def test_help_describes_every_option(verb):
    """``--help`` says what each option is: no option without a help text (46 of 7 verbs had none)."""
    import argparse

    def with_subcommands(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from with_subcommands(sub)

    top = getattr(importlib.import_module(SUBCOMMANDS[verb][0].split(":")[0]), "build_parser")()
    bare = [(p.prog, a.option_strings) for p in with_subcommands(top) for a in _options(p)
            if not (isinstance(a.help, str) and a.help.strip())]
    assert not bare, f"{verb}: options without help: {bare}"


def _nested(key: str, value) -> dict:
    """``{"probe": {"source": v}}`` for the key ``probe.source``: a YAML file's shape."""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def _parsed(top, prefix: list[str], argv: list[str]):
    """The namespace of the verb (of its subcommand, when ``prefix`` names one)."""
    ns = parse(top, [*prefix, *argv])
    return ns[prefix[0]] if prefix else ns


@pytest.mark.parametrize("verb", [v for v in PARSED_VERBS if v != "sweep"])  # sweep's --config is its sweep file
def test_a_config_file_sets_every_option(verb, tmp_path):
    """Each option of the verb, given as a YAML key, is parsed to the value it has on the command line."""
    parser, top, prefix = _parser_and_prefix(verb)
    required = REQUIRED[verb][len(prefix):]
    default = _parsed(top, prefix, required)
    changed = 0
    for action in _options(parser):
        if action.nargs == 0 and action.const is not True:  # store_const False (--lower_is_better): its pair's
            continue
        if set(action.option_strings) & (set(required) | _excluded_by(parser, required)):
            continue  # given on the command line (which wins over the file), or excluded by what is
        key = action.dest
        expected = _parsed(top, prefix, [*required, action.option_strings[0], *_value(top, prefix, required, action)])[key]
        config = tmp_path / f"{verb}-{key}.yaml"
        config.write_text(yaml.safe_dump(_nested(key, expected)))
        got = _parsed(top, prefix, ["--config", str(config), *required])[key]
        assert got == expected, (verb, key, got, expected)
        changed += expected != default[key]
    assert changed >= 1 or verb == "configs", f"{verb}: no option whose config value differs from its default"


@pytest.mark.parametrize("verb", [v for v in PARSED_VERBS if v != "sweep"])
def test_both_spellings_of_every_option(verb):
    parser, top, prefix = _parser_and_prefix(verb)
    required = REQUIRED[verb][len(prefix):]
    for action in _options(parser):
        canonical = next(s for s in action.option_strings if s.startswith("--"))
        if "_" not in canonical or canonical in _excluded_by(parser, required):
            continue
        value = _value(top, prefix, required, action)
        hyphen = "--" + canonical[2:].replace("_", "-")
        with_underscores = parse(top, canonical_flags([*prefix, *required, canonical, *value]))
        with_hyphens = parse(top, canonical_flags([*prefix, *required, hyphen, *value]))
        with_equals = parse(top, canonical_flags([*prefix, *required, f"{hyphen}={value[0]}"])) if value else with_hyphens
        assert with_underscores == with_hyphens == with_equals, (verb, canonical)


def test_canonical_flags_touches_options_only():
    argv = ["--max-new-tokens", "5", "--prompt", "a-b", "-h", "--top-p=0.9", "--", "--trainer.max-steps", "3"]
    assert canonical_flags(argv) == ["--max_new_tokens", "5", "--prompt", "a-b", "-h", "--top_p=0.9", "--",
                                     "--trainer.max-steps", "3"]


@pytest.mark.parametrize("verb", PARSED_VERBS)
@pytest.mark.parametrize("where", ["file", "line"])
def test_unknown_key_is_one_line_exit_2_nothing_written(verb, where, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    required = list(REQUIRED[verb])
    if verb == "sweep":  # the sweep file is the verb's config: its unknown key is the sweep's to refuse
        (work / "sweep.yaml").write_text(yaml.safe_dump({"name": "s", "root": "OUT", "grid": {"seed_everything": [1]},
                                                         "no_such_key_xyz": 1} if where == "file" else
                                                        {"name": "s", "root": "OUT", "grid": {"seed_everything": [1]}}))
        extra = [] if where == "file" else ["--no_such_key_xyz", "1"]
    elif where == "file":
        (work / "bad.yaml").write_text("no_such_key_xyz: 1\n")
        extra = ["--config", "bad.yaml"]
    else:
        extra = ["--no-such-key-xyz", "1"]
    before = sorted(p.name for p in work.iterdir())
    code = main([verb, *required[:1], *extra, *required[1:]]) if verb in ("launch", "trajectories") \
        else main([verb, *extra, *required])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (verb, where, err)
    assert len(lines) == 1 and lines[0].startswith("error:") and "no_such_key_xyz" in lines[0], (verb, where, err)
    assert sorted(p.name for p in work.iterdir()) == before  # nothing written


def test_fit_reads_config_and_both_spellings(tmp_path, capsys):
    """fit's parser is LightningCLI's: a config key and its hyphenated option both take effect (--print_config)."""
    from tests.helpers.cli import tiny_config

    config = tiny_config(tmp_path)
    printed = {}
    for spelling in ("--trainer.max_steps", "--trainer.max-steps"):
        with pytest.raises(SystemExit) as done:
            main(["fit", "--config", str(config), spelling, "11", "--print_config"])
        assert done.value.code in (0, None)
        printed[spelling] = yaml.safe_load("\n".join(ln for ln in capsys.readouterr().out.splitlines() if not ln.startswith("[")))
    assert printed["--trainer.max_steps"]["trainer"]["max_steps"] == 11 == printed["--trainer.max-steps"]["trainer"]["max_steps"]
    assert printed["--trainer.max_steps"]["run"]["root"] == str(tmp_path / "runs")  # from the config file


@pytest.mark.parametrize("verb", sorted(TRAINING))
@pytest.mark.parametrize("where", ["file", "line"])
def test_fit_unknown_key_is_one_line_exit_2_nothing_written(verb, where, tmp_path, monkeypatch, capsys):
    from tests.helpers.cli import tiny_config

    config = tiny_config(tmp_path)
    if where == "file":
        data = yaml.safe_load(config.read_text()) | {"no_such_key_xyz": 1}
        config.write_text(yaml.safe_dump(data))
        extra = []
    else:
        extra = ["--no_such_key_xyz", "1"]
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([verb, "--config", str(config), *extra]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "no_such_key_xyz" in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not (tmp_path / "runs").exists()


def test_a_usage_error_is_a_value_error():
    """Library code that raises ValueError for bad input and a parser's UsageError take the same exit path."""
    assert issubclass(UsageError, ValueError)


SCRIPTS = sorted([*ROOT.glob("train/*.py"), *ROOT.glob("analysis/*.py")])


def _verb_of(script: Path) -> str | None:
    """The verb of a one-line script: ``sys.exit(main(["VERB", *sys.argv[1:]]))`` after ``import sys`` and
    ``from lmdynamics.cli import main`` (a docstring allowed); None for any other shape."""
    body = ast.parse(script.read_text()).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    text = [ast.unparse(node) for node in body]
    if text[:2] != ["import sys", "from lmdynamics.cli import main"] or len(text) != 3:
        return None
    if text[2] == "sys.exit(main(sys.argv[1:]))" and script == ROOT / "train" / "run.py":
        return "fit"  # train/run.py fit|validate: the verb comes first, as it always has
    call = body[2].value
    try:
        verb, rest = call.args[0].args[0].elts
    except (AttributeError, IndexError, ValueError):
        return None
    if ast.unparse(rest) != "*sys.argv[1:]" or ast.unparse(body[2]) != f"sys.exit(main([{verb.value!r}, *sys.argv[1:]]))":
        return None
    return verb.value


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_script_is_one_line_of_its_verb(script):
    verb = _verb_of(script)
    assert verb in SUBCOMMANDS, f"{script.relative_to(ROOT)} is not `sys.exit(main([VERB, *sys.argv[1:]]))` of lmdynamics.cli"


def test_the_script_checker_refuses_a_second_implementation(tmp_path):
    fake = tmp_path / "x.py"
    fake.write_text('import sys\n\nfrom lmdynamics.compare import main\n\nsys.exit(main(sys.argv[1:]))\n')
    assert _verb_of(fake) is None
    fake.write_text('import sys\n\nfrom lmdynamics.cli import main\n\nprint(1)\nsys.exit(main(["compare", *sys.argv[1:]]))\n')
    assert _verb_of(fake) is None
    fake.write_text('"""Doc."""\nimport sys\n\nfrom lmdynamics.cli import main\n\nsys.exit(main(["compare", *sys.argv[1:]]))\n')
    assert _verb_of(fake) == "compare"
